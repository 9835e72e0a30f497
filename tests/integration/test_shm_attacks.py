"""Issue #15's attacks on the same-host path, with real processes, sockets and /dev/shm: a segment
truncated after its handle was sent, a sender killed with SIGKILL mid-write, and a segment
directory with no room. The receiver must go on with a counted error each time (a SIGBUS would
end the receiving process: its exit code says so), and the sender must fall back to the socket."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gossipml.codecs import build_codec, decode_model, encode_model
from gossipml.comm.config import TransportConfig
from gossipml.comm.shm import SHM_DIR_ENV, SHM_TAG, ShmReader, ShmWriter, release_token
from gossipml.comm.shmfile import ShmError
from gossipml.comm.shmpath import ShmInbox
from gossipml.comm.transport import Outgoing, Transport
from gossipml.wire import Message, pack, unpack

SHM_DIR = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="needs POSIX shared memory at /dev/shm")
CFG = TransportConfig(shm_min_bytes=1024)


def _model_frames(numel: int, value: float = 1.0) -> list:
    items, _ = encode_model({"w": torch.full((numel,), value)}, build_codec("identity"), None)
    return pack(Message("model", 0, 1, tuple(items)))


def _receive(inbox: ShmInbox, frames: list) -> tuple[str, object]:
    try:
        bufs = inbox.resolve([f.buffer for f in frames], lambda token: None)
        model = decode_model(unpack(bufs, max_message_bytes=1 << 30).tensors)
        return "ok", float(model["w"].double().sum())
    except ShmError as exc:
        return "error", exc.reason


def _transport_receiver(go_q, out_q, stop) -> None:
    """A receiving process: a real Transport; each message waits for a go token, then is read."""
    inbox = ShmInbox()

    def on_frames(sender, frames) -> None:
        go_q.get(timeout=60)
        out_q.put(_receive(inbox, frames))

    with Transport(1, "tcp://127.0.0.1:0", {}, CFG, on_frames) as t:
        out_q.put(t.address)
        stop.wait(120)


@pytest.fixture
def receiver():
    """A spawned receiving process; always stopped (killed if it hangs) at the end."""
    ctx = mp.get_context("spawn")
    go_q, out_q, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_transport_receiver, args=(go_q, out_q, stop), daemon=True)
    proc.start()
    yield proc, go_q, out_q, stop, out_q.get(timeout=60)
    proc.kill()
    proc.join(10)


def _own_segments() -> set[Path]:
    return set(SHM_DIR.glob(f"gml-{os.getpid()}-*"))


def _warm_up(sender: Transport, go_q, out_q) -> None:
    """Send a tiny (socket-only) model until one arrives: IMMEDIATE drops sends until connected."""
    for _ in range(30):
        sender.submit(Outgoing((1,), lambda: _model_frames(4)))
        go_q.put("go")
        try:
            assert out_q.get(timeout=2.0) == ("ok", 4.0)
            return
        except Exception:  # queue.Empty: not connected yet; take the unused go token back
            go_q.get(timeout=5)
    raise AssertionError("the receiver never got the warm-up message")


def _send(sender: Transport, frames: list, go_q, out_q) -> tuple[str, object]:
    sender.submit(Outgoing((1,), lambda: frames))
    go_q.put("go")
    return out_q.get(timeout=30)


def test_truncated_segment_is_a_counted_error(receiver):
    proc, go_q, out_q, stop, address = receiver
    with Transport(0, "tcp://127.0.0.1:0", {1: address}, CFG, lambda *a: None,
                   shm_dests=frozenset({1})) as sender:
        _warm_up(sender, go_q, out_q)
        assert _send(sender, _model_frames(4096), go_q, out_q) == ("ok", 4096.0)
        sender.submit(Outgoing((1,), lambda: _model_frames(8192, 2.0)))
        deadline = time.monotonic() + 30
        while sender.shm_offloaded < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for path in _own_segments():  # the handle is on its way: shrink what it points at
            os.truncate(path, 0)
        go_q.put("go")
        assert out_q.get(timeout=30) == ("error", "truncated")
        assert proc.is_alive() and sender.shm_offloaded == 2
        sender.call(lambda: sender.shm_outbox.disable(1))  # type: ignore[union-attr]
        sender.enable_shm(1)  # a fresh pool: the truncated segment is gone
        assert _send(sender, _model_frames(4096, 3.0), go_q, out_q) == ("ok", 3 * 4096.0)
        assert sender.shm_offloaded == 3
    stop.set()
    proc.join(30)
    assert proc.exitcode == 0
    assert not _own_segments()


def _hammer(handles_q) -> None:
    """A sender that rewrites one 32 MiB segment as fast as it can, sending every handle."""
    src = np.empty(32 << 20, dtype=np.uint8)
    with ShmWriter(min_segment_bytes=0, max_segments=1) as writer:
        for i in range(1 << 30):
            src.fill(i & 0xFF)  # every write different: a torn read would show two values
            handle = writer.write([src])
            handles_q.put(handle)
            writer.release(release_token(handle))  # reuse at once: the reader races the writer


def _queue_receiver(handles_q, out_q) -> None:
    """A receiving process that reads every handle it is given and reports what happened."""
    reader, counts = ShmReader(), {}
    while (handle := handles_q.get(timeout=120)) is not None:
        try:
            (data,) = reader.read_copy(handle)
            key = "ok" if data.min() == data.max() else "torn"
        except ShmError as exc:
            key = exc.reason
        counts[key] = counts.get(key, 0) + 1
        out_q.put(key)
    out_q.put(counts)


def test_sender_killed_mid_write_leaves_the_receiver_running():
    ctx = mp.get_context("spawn")
    handles_q, out_q = ctx.Queue(), ctx.Queue()
    reader = ctx.Process(target=_queue_receiver, args=(handles_q, out_q), daemon=True)
    writer = ctx.Process(target=_hammer, args=(handles_q,), daemon=True)
    reader.start()
    writer.start()
    try:
        for _ in range(5):  # the race is on
            out_q.get(timeout=60)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(10)
        leftovers = set(SHM_DIR.glob(f"gml-{writer.pid}-*"))
        for path in leftovers:  # and then the file is cut short under the reader, too
            os.truncate(path, 4096)
        with ShmWriter(min_segment_bytes=0) as mine:
            handles_q.put(mine.write([np.ones(1000, np.uint8)]))
            handles_q.put(None)
            counts = {}
            while not isinstance(counts, dict) or not counts:
                counts = out_q.get(timeout=60)
        reader.join(30)
        assert reader.exitcode == 0, f"the receiver died (exit {reader.exitcode})"
        assert counts.get("ok", 0) >= 1 and "torn" not in counts, counts
        assert set(counts) <= {"ok", "stale", "truncated", "no_segment"}, counts
    finally:
        for proc in (writer, reader):
            proc.kill()
            proc.join(10)
        for path in SHM_DIR.glob(f"gml-{writer.pid}-*"):
            path.unlink()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs: a /dev/shm with no room (Docker's 64 MiB, scaled down)."""
    mnt = tmp_path / "shm"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()[:80]}); needs root")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_full_segment_directory_falls_back_to_the_socket(small_tmpfs, monkeypatch, zmq_context):
    monkeypatch.setenv(SHM_DIR_ENV, str(small_tmpfs))
    inbox, got = ShmInbox(), []

    def on_frames(sender, frames) -> None:
        got.append((bytes(frames[0].buffer) == SHM_TAG, _receive(inbox, frames)))

    with Transport(1, "tcp://127.0.0.1:0", {}, CFG, on_frames, context=zmq_context) as b, \
            Transport(0, "tcp://127.0.0.1:0", {1: b.address}, CFG, lambda *a: None,
                      context=zmq_context, shm_dests=frozenset({1})) as a:
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:  # tiny, socket only: until connected
            a.submit(Outgoing((1,), lambda: _model_frames(4)))
            time.sleep(0.2)
        for n_got, numel in enumerate([100_000, 1_000_000], 2):  # 400 kB fits; 4 MB does not
            a.submit(Outgoing((1,), lambda: _model_frames(numel)))
            while len(got) < n_got and time.monotonic() < deadline:
                time.sleep(0.02)
        assert got[-2:] == [(True, ("ok", 100_000.0)),
                            (False, ("ok", 1_000_000.0))]  # the second over the socket, intact
        assert a.shm_outbox.counts["fallback_no_space"] >= 1  # type: ignore[union-attr]
        assert a.alive and b.alive
