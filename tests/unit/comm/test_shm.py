"""Same-host shared-memory path: bytes intact across two real (spawned) processes, segments reused
until released, stale, hostile and foreign segments refused, and no /dev/shm entry left behind.

``python tests/unit/comm/test_shm.py`` prints a throughput comparison (shm vs memcpy vs a pipe)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipml.comm.shm import (SHM_TAG, ShmError, ShmReader, ShmWriter, offload, release_token,
                               resolve)

SHM_DIR = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(),
                                reason="needs POSIX shared memory at /dev/shm")


def _gml_entries() -> set[str]:
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith("gml-")}


def _digests(views) -> list[str]:
    return [hashlib.sha256(v).hexdigest() for v in views]


def _child(inbox, outbox) -> None:
    """The receiving process: answers each command with what it read (or the ShmError reason)."""
    reader = ShmReader()
    while True:
        cmd, *args = inbox.get()
        if cmd == "stop":
            reader.close()
            outbox.put("stopped")
            return
        try:
            if cmd in ("read", "read_copy"):
                outbox.put(("ok", _digests(reader.read_copy(args[0])), release_token(args[0])))
            elif cmd == "model":  # the intended wiring: resolve, unpack, decode, release
                from gossipml.codecs import decode_model
                from gossipml.wire import unpack

                frames, handle = resolve(args[0], reader)
                msg = unpack(frames, max_message_bytes=1 << 30)
                model = decode_model(msg.tensors)
                outbox.put(("ok", {k: v.double().sum().item() for k, v in model.items()},
                            release_token(handle)))
                del frames, msg, model
        except ShmError as exc:
            outbox.put(("error", exc.reason, str(exc)))


@pytest.fixture(scope="module")
def child():
    """One spawned receiver process for the module; always stopped, never left running."""
    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_child, args=(inbox, outbox), daemon=True)
    proc.start()

    def ask(*cmd):
        inbox.put(cmd)
        return outbox.get(timeout=60)

    yield ask
    inbox.put(("stop",))
    try:
        assert outbox.get(timeout=30) == "stopped"
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


@pytest.fixture
def no_leaks():
    """Fails the test if it leaves a gossipml segment in /dev/shm."""
    before = _gml_entries()
    yield
    assert _gml_entries() <= before, _gml_entries() - before


def _arrays(seed: int, sizes: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=n, dtype=np.uint8) for n in sizes]


# ---- across processes --------------------------------------------------------------------------
def test_bytes_cross_processes_and_segments_are_reused(child, no_leaks):
    with ShmWriter(min_segment_bytes=0, max_segments=2) as writer:
        used = set()
        for i in range(6):
            bufs = _arrays(i, [4 << 20, 1000, 0, 7]) + [np.linspace(0, 1, 33).reshape(3, 11)]
            handle = writer.write(bufs)
            used.add(handle["name"])
            status, digests, token = child("read_copy" if i % 2 else "read", handle)
            assert status == "ok" and digests == _digests(bufs)
            assert writer.release(token) and writer.in_flight == 0
        assert len(used) == 1  # released segments are reused, not recreated
        assert set(writer.names) <= _gml_entries()
    assert not (used & _gml_entries())  # close unlinked it


def test_pool_full_stale_handles_and_growth(child, no_leaks):
    with ShmWriter(min_segment_bytes=0, max_segments=2) as writer:
        h1 = writer.write(_arrays(1, [5000]))
        h2 = writer.write(_arrays(2, [5000]))
        assert writer.in_flight == 2 and h1["name"] != h2["name"]
        with pytest.raises(ShmError) as full:
            writer.write(_arrays(3, [10]))
        assert full.value.reason == "pool_full"
        assert child("read", h1)[0] == "ok"
        assert writer.release(release_token(h1)) and not writer.release(release_token(h1))
        h3 = writer.write(_arrays(3, [10]))  # reuses h1's segment, next generation
        assert (h3["name"], h3["gen"]) == (h1["name"], h1["gen"] + 1)
        assert child("read", h1)[:2] == ("error", "stale")
        assert not writer.release(release_token(h1))  # a stale release frees nothing
        writer.release(release_token(h3))
        big = writer.write(_arrays(4, [1 << 20]))  # pool full, free segment too small: replaced
        assert h1["name"] not in _gml_entries() and big["name"] in _gml_entries()
        assert child("read", big)[1] == _digests(_arrays(4, [1 << 20]))


def test_wire_message_with_tensor_bytes_in_shm(child, no_leaks):
    torch = pytest.importorskip("torch")
    from gossipml.codecs import build_codec, encode_model
    from gossipml.wire import Message, pack

    gen = torch.Generator().manual_seed(0)
    model = {"w": torch.randn(64, 32, generator=gen),
             "b": torch.randn(32, generator=gen).bfloat16()}
    items, _ = encode_model(model, build_codec("identity"), None)
    frames = pack(Message("model", 0, 3, tuple(items)))
    with ShmWriter() as writer:
        sent = offload(frames, writer, min_bytes=1024)
        assert len(sent) == 3 and sent[0] == SHM_TAG and writer.in_flight == 1
        status, sums, token = child("model", [bytes(memoryview(f)) for f in sent])
        assert status == "ok" and writer.release(token)
    assert sums == pytest.approx({k: v.double().sum().item() for k, v in model.items()})


def test_missing_segment_is_reported(child, no_leaks):
    writer = ShmWriter(min_segment_bytes=0)
    handle = writer.write([b"abc"])
    writer.close()
    assert child("read", handle)[:2] == ("error", "no_segment")


def test_offload_falls_back_to_plain_frames(no_leaks):
    frames = [b"header", np.zeros(100, np.uint8), b"abc"]
    with ShmWriter(min_segment_bytes=0, max_segments=1) as writer, ShmReader() as reader:
        assert offload(frames, writer, min_bytes=1000) == frames  # too small to be worth it
        assert offload(frames[:1], writer) == frames[:1]  # nothing to offload
        first = offload(frames, writer)
        assert offload(frames, writer) == frames  # the one segment awaits its release
        assert resolve(frames, reader) == (frames, None)  # plain messages pass through
        got, handle = resolve(first, reader)
        assert got[0] == b"header" and [bytes(v) for v in got[1:]] == [bytes(100), b"abc"]
        for bad in [b"\xc1", b"\x93\x01", msgpack.packb({"name": "x"}), b"\0" * (2 << 20)]:
            with pytest.raises(ShmError) as e:
                resolve([SHM_TAG, b"header", bad], reader)
            assert e.value.reason == "bad_handle"
        del got
        assert writer.release(release_token(handle))


# ---- hostile handles and foreign segments (same process) ----------------------------------------
@pytest.fixture
def one_segment(no_leaks):
    with ShmWriter(min_segment_bytes=0) as writer, ShmReader() as reader:
        yield writer, reader, writer.write([b"x" * 100])


def test_hostile_handles_are_refused(one_segment):
    writer, reader, h = one_segment
    size = h["size"]
    bad = [None, [], {"name": h["name"]}, dict(h, extra=1), dict(h, name="../../etc/passwd"),
           dict(h, name="/gml-1-2-abcdef01"), dict(h, name="psm_123"), dict(h, gen=0),
           dict(h, gen=True), dict(h, gen=-1), dict(h, offsets=[0]), dict(h, offsets=[size]),
           dict(h, lengths=[size]), dict(h, offsets=[-64]), dict(h, lengths=[1.5]),
           dict(h, offsets=[64, 64]), dict(h, offsets=64), dict(h, lengths=[True]),
           dict(h, size=-1), dict(h, size=8), dict(h, size="4096")]
    for handle in bad:
        with pytest.raises(ShmError) as e:
            reader.read_copy(handle)
        assert e.value.reason == "bad_handle", handle
    with pytest.raises(ShmError) as e:  # a size that is not the file's: refused before reading
        reader.read_copy(dict(h, size=size * 2, lengths=[size]))
    assert e.value.reason == "truncated"
    for token in [None, 3, ("x", 1), {"name": h["name"], "gen": "1"}]:
        with pytest.raises(ShmError):
            writer.release(token)
    assert not writer.release({"name": "gml-1-2-abcdef01", "gen": 1})  # not ours: ignored
    assert bytes(reader.read_copy(h)[0]) == b"x" * 100


def test_copies_are_writable_and_ours(one_segment):
    writer, reader, h = one_segment
    (copy,) = reader.read_copy(h)
    copy[:] = 7  # ours: writing does not touch the segment
    assert not memoryview(copy).readonly and bytes(reader.read_copy(h)[0]) == b"x" * 100


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_any_handle_only_raises_shm_error(data):
    with ShmWriter(min_segment_bytes=0) as writer, ShmReader() as reader:
        real = writer.write([b"y" * 50, b"z" * 10])
        ints = st.one_of(st.integers(-5, 5000), st.booleans(), st.floats(), st.none())
        handle = data.draw(st.one_of(
            st.fixed_dictionaries({
                "name": st.one_of(st.just(real["name"]), st.text(max_size=30)),
                "gen": st.one_of(st.just(real["gen"]), ints),
                "size": st.one_of(st.just(real["size"]), ints),
                "offsets": st.one_of(st.lists(ints, max_size=3), ints),
                "lengths": st.one_of(st.lists(ints, max_size=3), ints)}),
            st.dictionaries(st.text(max_size=8), ints, max_size=5), ints))
        try:
            copies = reader.read_copy(handle)
        except ShmError as exc:
            assert exc.reason in {"bad_handle", "no_segment", "stale", "truncated"}
        else:
            assert all(isinstance(c, np.ndarray) for c in copies)


def _plant(name: str, mode: int, uid: int | None = None, data: bytes = b"") -> Path:
    path = SHM_DIR / name
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode)
    os.write(fd, data)
    os.fchmod(fd, mode)
    if uid is not None:
        os.fchown(fd, uid, -1)
    os.close(fd)
    return path


@pytest.mark.parametrize("mode,uid,why", [(0o644, None, "mode 0644"), (0o600, 65534, "uid 65534")])
def test_foreign_segments_are_refused(no_leaks, mode, uid, why):
    if uid is not None and os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    handle = {"name": f"gml-{os.getpid()}-0-{os.urandom(4).hex()}", "gen": 1, "size": 4096,
              "offsets": [64], "lengths": [8]}
    head = b"GMLSHM01" + (1).to_bytes(8, "little")
    path = _plant(handle["name"], mode, uid, head + bytes(4096 - len(head)))
    try:
        with pytest.raises(ShmError) as e:
            ShmReader().read_copy(handle)
        assert e.value.reason == "not_ours" and why.split()[-1] in str(e.value)
    finally:
        path.unlink()


def test_fifo_and_symlink_are_refused_without_hanging(no_leaks, tmp_path):
    fifo, link = (f"gml-{os.getpid()}-{i}-{os.urandom(4).hex()}" for i in (1, 2))
    os.mkfifo(SHM_DIR / fifo, 0o600)
    (tmp_path / "target").write_bytes(bytes(4096))
    (SHM_DIR / link).symlink_to(tmp_path / "target")
    try:
        for name in (fifo, link):
            with pytest.raises(ShmError) as e:
                ShmReader().read_copy({"name": name, "gen": 1, "size": 4096, "offsets": [64],
                                       "lengths": [8]})
            assert e.value.reason == "not_ours", name
    finally:
        (SHM_DIR / fifo).unlink()
        (SHM_DIR / link).unlink()


def test_segments_are_0600_whatever_the_umask(no_leaks):
    old = os.umask(0)
    try:
        with ShmWriter(min_segment_bytes=0) as writer:
            h = writer.write([b"abc"])
            st_ = os.stat(SHM_DIR / h["name"])
            assert (st_.st_mode & 0o777, st_.st_uid) == (0o600, os.geteuid())
    finally:
        os.umask(old)


# ---- expiry, the outbox and the probe handshake -------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unreleased_segments_expire_and_are_unlinked(no_leaks):
    clock = _Clock()
    with ShmWriter(min_segment_bytes=0, max_segments=2, release_timeout_s=5.0,
                   clock=clock) as writer:
        h1, h2 = writer.write([b"a"]), writer.write([b"b"])
        with pytest.raises(ShmError) as e:
            writer.write([b"c"])
        assert e.value.reason == "pool_full"
        clock.now += 4.0
        assert writer.reclaim() == 0 and writer.in_flight == 2
        clock.now += 2.0
        h3 = writer.write([b"c"])  # both expired: unlinked, a new segment made
        assert writer.expired == 2 and writer.in_flight == 1
        assert not {h1["name"], h2["name"]} & _gml_entries() and h3["name"] in _gml_entries()
        assert not writer.release(release_token(h1))  # a late release of an expired one: ignored


# ---- throughput (not a test) -------------------------------------------------------------------
def _bench_child(conn, mode: str) -> None:
    reader = ShmReader()
    while True:
        if mode == "pipe":
            data = conn.recv_bytes()
            if not data:
                break
            conn.send(len(data))
        else:
            handle = conn.recv()
            if handle is None:
                break
            data = reader.read_copy(handle)[0]
            del data
            conn.send(release_token(handle))
    reader.close()


def bench(mib: int = 64, iters: int = 10) -> dict[str, float]:
    """GB/s of a warm memcpy, of ShmWriter.write into a reused segment, and of a send-to-release
    round trip between two processes: shm (the receiver copies out with preadv) against the
    bytes through a pipe."""
    src = np.ones(mib << 20, dtype=np.uint8)
    dst = np.empty_like(src)
    out: dict[str, float] = {}
    np.copyto(dst, src)  # fault the destination's pages in first
    t0 = time.perf_counter()
    for _ in range(iters):
        np.copyto(dst, src)
    out["memcpy_gbps"] = src.nbytes * iters / (time.perf_counter() - t0) / 1e9
    ctx = mp.get_context("spawn")
    for mode in ("shm_copy", "pipe"):
        a, b = ctx.Pipe()
        proc = ctx.Process(target=_bench_child, args=(b, mode))
        proc.start()
        with ShmWriter() as writer:
            for i in range(iters + 1):
                if i == 1:
                    t0 = time.perf_counter()
                if mode != "pipe":
                    a.send(writer.write([src]))
                    writer.release(a.recv())
                else:
                    a.send_bytes(src)
                    a.recv()
            out[f"{mode}_roundtrip_gbps"] = src.nbytes * iters / (time.perf_counter() - t0) / 1e9
            t0 = time.perf_counter()
            for _ in range(iters):
                writer.release(writer.write([src]))
            out["shm_write_gbps"] = src.nbytes * iters / (time.perf_counter() - t0) / 1e9
        a.send(None) if mode != "pipe" else a.send_bytes(b"")
        proc.join()
    return out


if __name__ == "__main__":
    for key, value in bench().items():
        print(f"{key:>24}: {value:6.2f}")
