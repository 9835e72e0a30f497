"""Fast start: peers forked from one runner that has imported torch, gossipml and the dataset once.

``[run] start_method = "fork"`` (the default of ``gossipml run``): the runner calls
:func:`preload` (torch, pyzmq, the peer and task modules, the experiment's dataset), freezes the
garbage collector's view of those objects so children do not copy their pages by touching
reference counts during collections, then :func:`fork_peer` forks one child per peer. A child
pays no interpreter start, no ``import torch`` and no dataset load, and shares every page it does
not write with the runner and its siblings (copy-on-write), which is what cuts its PSS.

Forking is safe here only because it happens before the runner has a ZeroMQ context, a CUDA
context or a thread of its own (importing torch leaves one idle helper thread, which the child
simply does not have): the child builds all of those itself, after the fork. A child leaves with
``os._exit`` once its peer has closed (events flushed, goodbye sent), skipping the interpreter's
teardown of torch. What a child runs is given to :func:`fork_peer` (the runner's
``run_peer``). ``start_method = "spawn"`` keeps the previous way, one fresh ``gossipml peer``
interpreter per peer, as the baseline and for anyone who needs a clean process.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from gossipml.config import ExperimentConfig

__all__ = ["preload", "fork_peer", "ForkedPeer"]

BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def preload(cfg: ExperimentConfig) -> Any:
    """Import what every peer imports and load the experiment's dataset, once, in the runner;
    returns the dataset (shared copy-on-write by every forked peer)."""
    import torch  # noqa: F401  (the point is to have it imported before the fork)
    import torch._dynamo  # noqa: F401  (every optimizer.step imports it, and sympy, lazily)
    import zmq  # noqa: F401

    import gossipml.comm.security  # noqa: F401
    import gossipml.comm.transport  # noqa: F401
    import gossipml.peer.peer  # noqa: F401
    from gossipml.data import dataset_for
    from gossipml.tasks import build_task  # noqa: F401

    dataset = dataset_for(cfg.data)
    gc.collect()
    gc.freeze()  # collections in a child no longer write to these objects' pages
    return dataset


class ForkedPeer:
    """A forked peer process, with the part of :class:`subprocess.Popen` the runner uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the child has ended (negative: killed by that signal), else None."""
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: nothing more to learn
                self.returncode = -1
                return self.returncode
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait (at most ``timeout`` seconds when given) for the child; its exit code or None."""
        import select

        if self.poll() is not None:
            return self.returncode
        fd = os.pidfd_open(self.pid)
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        return self.poll()

    def kill(self) -> None:
        """SIGKILL the child's whole session (it leads its own), or the child itself when it has
        not yet called ``setsid``."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # already gone
                pass


def fork_peer(cfg: ExperimentConfig, peer_id: int, main: Callable[[], int], *,
              log_path: Path) -> ForkedPeer:
    """Fork peer ``peer_id`` from this (pre-imported) process; the child runs ``main()`` in its
    own session, writing stdout and stderr to ``log_path``, and exits with its code without
    the interpreter's teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return ForkedPeer(pid)
    code = 1
    try:
        _become_peer(cfg, peer_id, log_path)
        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # reported in the peer's log, and as a failed peer by the runner
        traceback.print_exc()
    finally:
        try:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _become_peer(cfg: ExperimentConfig, peer_id: int, log_path: Path) -> None:
    """In the child: own session, output to the peer's log, the runner's signal handlers gone."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    # the runner's sys.stdout may not be fd 1 (pytest, a notebook): write to the log for sure
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as we do)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    for key in BLAS_THREAD_VARS:
        os.environ[key] = str(cfg.run.torch_threads)
    root = logging.getLogger()
    for handler in list(root.handlers):  # the runner's handlers write to the runner's console
        root.removeHandler(handler)
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(asctime)s peer {peer_id} %(levelname)s %(name)s: %(message)s")
