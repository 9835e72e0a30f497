"""One communication thread and one ZeroMQ context for many peers of one process.

A :class:`~gossipml.comm.transport.Transport` made with ``hub=`` has no thread of its own: the
hub's thread owns its sockets (ZeroMQ sockets stay on one thread) and serves it by the same steps
its own thread would run (open, serve, flush, tear down). One poller covers every attached peer's
ROUTER, and each turn serves only the peers that have input, queued commands or sends in flight,
plus those whose periodic tick (heartbeats, start-up probing) is due, in round-robin order. So a
process of a thousand peers runs one communication thread instead of a thousand threads that
each wake every ``poll_interval_s``.

A peer whose serving raises is torn down alone (its ``error`` says why, and its peer stops with
that reason); the hub and every other peer go on. Transports are attached from any thread
(``start()``) and detached by ``close()``; commands reach the hub through one wake-up pipe.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import resource
import threading
import time
from typing import Protocol

import zmq

__all__ = ["CommHub", "Served", "sized_context"]

log = logging.getLogger("gossipml.comm.hub")


def sized_context(sockets: int, *, what: str = "these peers") -> zmq.Context:
    """A ZeroMQ context allowed ``sockets`` sockets (libzmq's default cap is 1,023), after
    raising this process's file limit to its hard limit (each socket holds a descriptor);
    ConfigError-like ValueError when even the hard limit is too low, saying what to change."""
    need = sockets + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need + 512 and hard != soft:
        soft = hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < need + 512:
        raise ValueError(f"{what} in one process need about {need + 512} file descriptors (one "
                         f"per socket); this process may open {soft} (ulimit -n): raise it, or "
                         f"lower n_peers or the degree, or run mode = \"processes\"")
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, max(need, ctx.get(zmq.MAX_SOCKETS)))
    return ctx


class Served(Protocol):
    """What the hub needs of a transport (``Transport`` made with ``hub=``)."""

    peer_id: int

    @property
    def busy(self) -> bool:
        """Sends in flight or delayed."""
        ...

    @property
    def draining(self) -> bool:
        """Closing, with shared-memory segments a receiver has not yet released."""
        ...

    @property
    def linger_s(self) -> float:
        """How long a close waits for what is in flight."""
        ...

    @property
    def next_due_s(self) -> float | None:
        """When its first delayed send is due, or None."""
        ...

    def open_sockets(self) -> tuple[zmq.Socket, ...]:
        """Bind and connect; the sockets to poll for input."""
        ...

    def serve(self, events: dict, *, tick: bool) -> None:
        """One turn over what ``poll`` found ready."""
        ...

    def flush(self, poller: zmq.Poller | None) -> None:
        """Send what was queued before close."""
        ...

    def teardown(self) -> None:
        """Close every socket."""
        ...

    def opened(self, error: BaseException | None = None) -> None:
        """Tell the transport its sockets are open (or why not)."""
        ...

    def ended(self, error: BaseException | None = None) -> None:
        """Tell the transport it has been torn down (and why, if by an error)."""
        ...


class CommHub:
    """A communication thread serving many transports over one ZeroMQ context.

    ``tick_interval_s`` is how often each peer's periodic work runs (at least
    ``poll_interval_s``): heartbeats and start-up probing, which need tenths of a second, not
    the per-turn tick of a thread serving one peer."""

    def __init__(self, context: zmq.Context | None = None, *, poll_interval_s: float = 0.02,
                 tick_interval_s: float = 0.05, name: str = "gossipml-comm-hub") -> None:
        if poll_interval_s <= 0 or tick_interval_s <= 0:
            raise ValueError("poll_interval_s and tick_interval_s must be > 0")
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.poll_ms = max(1, int(poll_interval_s * 1000))
        self.tick_interval_s = max(tick_interval_s, poll_interval_s)
        self.name = name
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # ("attach"|"detach", t)
        self._woken: queue.SimpleQueue = queue.SimpleQueue()  # transports with commands
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.served = 0  # transports attached now (written by the hub thread)

    # ---- any thread -----------------------------------------------------------------------
    def start(self) -> "CommHub":
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """True while the hub's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def attach(self, transport: Served) -> None:
        """Serve ``transport`` from now on (it is told through ``opened``)."""
        if not self.alive:
            raise RuntimeError(f"{self.name}: not running (start() it first; after close() "
                               "make a new hub)")
        self._requests.put(("attach", transport))
        self._poke()

    def detach(self, transport: Served) -> None:
        """Flush, then tear ``transport`` down (it is told through ``ended``)."""
        self._requests.put(("detach", transport))
        self._poke()

    def wake(self, transport: Served) -> None:
        """``transport`` has queued commands: serve it on the next turn."""
        self._woken.put(transport)
        self._poke()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread; transports still attached are flushed and torn down."""
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("%s: did not stop in %.1f s", self.name, timeout_s)
                return
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._own_context:
            self.context.term()

    def __enter__(self) -> "CommHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # full (a wake-up is pending) or closed

    # ---- the hub's thread -----------------------------------------------------------------
    def _run(self) -> None:
        state = _State(zmq.Poller())
        state.poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(state.poller.poll(self._timeout_ms(state)))
                if self._wake_r in events:
                    try:
                        os.read(self._wake_r, 65536)
                    except (BlockingIOError, OSError):
                        pass
                self._take_requests(state)
                self._serve_turn(state, events)
        except Exception as exc:  # a bug in the hub itself: every transport learns of it
            self.error = exc
            log.exception("%s: failed", self.name)
        finally:
            for t in list(state.sockets):
                self._end(state, t, self.error, flush=self.error is None)

    def _timeout_ms(self, state: "_State") -> int:
        """Until the next tick or delayed send; one poll interval while sends are in flight."""
        if state.closing:
            return self.poll_ms
        until = state.ticks[0][0] if state.ticks else None
        for t in state.busy:
            due = t.next_due_s
            if due is None:
                return self.poll_ms  # trackers to look at again soon
            until = due if until is None else min(until, due)
        if until is None:
            return self.poll_ms * 10
        return max(0, min(self.poll_ms * 10, int((until - time.monotonic()) * 1000) + 1))

    def _take_requests(self, state: "_State") -> None:
        while True:
            try:
                what, t = self._requests.get_nowait()
            except queue.Empty:
                break
            if what == "attach" and t not in state.sockets:
                self._open(state, t)
            elif what == "detach" and t in state.sockets:
                t.flush(None)
                if t.draining:
                    state.closing[t] = time.monotonic() + t.linger_s
                else:
                    self._end(state, t, None, flush=False)
        while True:
            try:
                t = self._woken.get_nowait()
            except queue.Empty:
                break
            if t in state.sockets:
                state.ready.add(t)

    def _open(self, state: "_State", t: Served) -> None:
        try:
            sockets = t.open_sockets()
        except Exception as exc:  # cannot bind: that transport's start() raises with it
            t.teardown()
            t.opened(exc)
            return
        for sock in sockets:
            state.poller.register(sock, zmq.POLLIN)
            state.owner[sock] = t
        state.sockets[t] = sockets
        state.ticks.append((time.monotonic(), t))
        state.ready.add(t)  # commands queued before start() run now
        self.served = len(state.sockets)
        t.opened()

    def _serve_turn(self, state: "_State", events: dict) -> None:
        ready = state.ready
        for sock in events:
            t = state.owner.get(sock)
            if t is not None:
                ready.add(t)
        ready |= state.busy
        ready.update(state.closing)
        now = time.monotonic()
        ticking = set()
        while state.ticks and state.ticks[0][0] <= now:
            _, t = state.ticks.popleft()
            if t in state.sockets:
                ticking.add(t)
                state.ticks.append((now + self.tick_interval_s, t))
        state.ready = set()
        state.busy = set()
        for t in ready | ticking:
            if t not in state.sockets:
                continue
            try:
                t.serve(events, tick=t in ticking and t not in state.closing)
            except Exception as exc:  # that peer's failure, not the hub's: end it alone
                log.exception("peer %d: serving it failed", t.peer_id)
                self._end(state, t, exc, flush=False)
                continue
            if t.busy:
                state.busy.add(t)
            if t in state.closing and (not t.draining or now > state.closing[t]):
                self._end(state, t, None, flush=False)

    def _end(self, state: "_State", t: Served, error: BaseException | None, *,
             flush: bool) -> None:
        for sock in state.sockets.pop(t, ()):
            state.poller.unregister(sock)
            state.owner.pop(sock, None)
        state.busy.discard(t)
        state.closing.pop(t, None)
        try:
            if flush:
                t.flush(None)
            t.teardown()
        except Exception as exc:
            log.exception("peer %d: tearing it down failed", t.peer_id)
            error = error or exc
        self.served = len(state.sockets)
        t.ended(error)


class _State:
    """What the hub's thread keeps: who is attached, which socket is whose, who to serve."""

    def __init__(self, poller: zmq.Poller) -> None:
        self.poller = poller
        self.sockets: dict[Served, tuple] = {}
        self.owner: dict[object, Served] = {}
        self.ready: set[Served] = set()
        self.busy: set[Served] = set()
        self.closing: dict[Served, float] = {}
        self.ticks: collections.deque = collections.deque()  # (due, transport), due order
