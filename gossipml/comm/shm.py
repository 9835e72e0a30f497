"""Same-host fast path: tensor bytes through POSIX shared memory, only a small handle on the socket.

A :class:`ShmWriter` (one per sender and destination, used by one thread) keeps a small pool of
named segments. ``write(buffers)`` copies the buffers into a free segment (one memcpy; segments
are reused, so their pages are faulted in once, not on every send) and returns a msgpack-able
handle ``{"name", "gen", "offsets", "lengths"}`` to send instead of the data frames. The segment
stays busy until the receiver's release token (``release_token(handle)``, carried back over the
socket) comes back to ``writer.release``. When every segment is busy and the pool is full,
``write`` raises ``ShmError("pool_full")``: send the frames over the socket instead.

A :class:`ShmReader` maps segments read-only (cached by name) and returns memoryviews into them
(``read``: zero copy, release after use) or copies (``read_copy``: release right away). Handles
come from the network, so every field is checked: the name must look like a gossipml segment
(no other shared memory of the host can be opened), offsets and lengths must lie inside the
segment, and the generation stamped in the segment's first bytes must match the handle's (a stale
handle to a reused segment is refused). Failures raise :class:`ShmError` with a ``reason`` slug.

Framing for the socket: :func:`offload` turns packed wire frames into ``[SHM_TAG, header,
msgpack(handle)]`` (or leaves them as they are when small or when no segment is free) and
:func:`resolve` turns those back into ``[header, *views]`` for ``wire.unpack``; docs/wire.md has
the envelope and the ``release`` message.

Segment layout: bytes 0..7 ``b"GMLSHM01"``, 8..15 the generation (little-endian u64), data from
byte 64, every buffer at a 64-byte aligned offset. Names are ``gml-<pid>-<counter>-<8 hex>``
(the hex random per writer), never reused; ``close`` unlinks every segment the writer created.
"""

from __future__ import annotations

import mmap
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Iterable, Mapping, Sequence

import msgpack

__all__ = ["ShmError", "ShmWriter", "ShmReader", "release_token", "offload", "resolve",
           "offloaded_handle", "SHM_TAG",
           "NAME_PATTERN"]

MAGIC = b"GMLSHM01"
HEADER_BYTES = 64
ALIGN_BYTES = 64
MAX_BUFFERS = 1 << 16
NAME_PATTERN = re.compile(r"gml-[0-9]{1,10}-[0-9]{1,12}-[0-9a-f]{8}")
#: Frame 0 of a message whose data frames live in shared memory (a wire header is a msgpack map,
#: which never starts with this byte string).
SHM_TAG = b"gml-shm1"
MAX_HANDLE_BYTES = 1 << 20
_HANDLE_KEYS = frozenset({"name", "gen", "offsets", "lengths"})


class ShmError(ValueError):
    """A shared-memory handle or release was refused, or the pool is full; ``reason`` is a slug."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _is_count(x: Any, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= hi


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise ShmError("bad_handle", f"segment name {name!r:.60} is not a gossipml segment "
                       f"name ({NAME_PATTERN.pattern})")
    return name


def _bytes_of(buf: Any) -> memoryview:
    view = memoryview(buf)
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def release_token(handle: Mapping[str, Any]) -> dict[str, Any]:
    """The tiny msgpack-able map the receiver sends back so the writer can reuse the segment."""
    return {"name": handle["name"], "gen": handle["gen"]}


@dataclass
class _Segment:
    shm: shared_memory.SharedMemory
    gen: int = 0
    busy: bool = False

    @property
    def capacity(self) -> int:
        return self.shm.size


class ShmWriter:
    """A sender's pool of reusable shared-memory segments for one destination (one thread only)."""

    def __init__(self, *, min_segment_bytes: int = 1 << 20, max_segments: int = 4,
                 max_segment_bytes: int = 1 << 36) -> None:
        if not (min_segment_bytes >= 0 and max_segments >= 1 and max_segment_bytes > HEADER_BYTES):
            raise ValueError("ShmWriter needs min_segment_bytes >= 0, max_segments >= 1 and "
                             f"max_segment_bytes > {HEADER_BYTES}")
        self.min_segment_bytes = min_segment_bytes
        self.max_segments = max_segments
        self.max_segment_bytes = max_segment_bytes
        self._tag = os.urandom(4).hex()
        self._counter = 0
        self._segments: dict[str, _Segment] = {}
        self._closed = False

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the segments this writer holds now."""
        return tuple(self._segments)

    @property
    def in_flight(self) -> int:
        """Segments written and not yet released."""
        return sum(s.busy for s in self._segments.values())

    def write(self, buffers: Iterable[Any]) -> dict[str, Any]:
        """Copy ``buffers`` into a free segment and return its handle; ShmError('pool_full') when
        every segment is busy and the pool is at ``max_segments``."""
        if self._closed:
            raise ShmError("closed", "this ShmWriter is closed; make a new one")
        views = [_bytes_of(b) for b in buffers]
        offsets, pos = [], HEADER_BYTES
        for v in views:
            offsets.append(pos)
            pos = _align(pos + v.nbytes, ALIGN_BYTES)
        seg = self._acquire(pos)
        buf = seg.shm.buf
        for v, off in zip(views, offsets):
            buf[off:off + v.nbytes] = v
        seg.gen += 1
        seg.busy = True
        buf[:16] = MAGIC + seg.gen.to_bytes(8, "little")
        return {"name": seg.shm.name.lstrip("/"), "gen": seg.gen, "offsets": offsets,
                "lengths": [v.nbytes for v in views]}

    def release(self, handle_or_id: Any) -> bool:
        """Mark a segment free again from a handle or release token; False if unknown or stale
        (already released, or a later write reused it). ShmError('bad_handle') if malformed."""
        if isinstance(handle_or_id, (tuple, list)) and len(handle_or_id) == 2:
            name, gen = handle_or_id
        elif isinstance(handle_or_id, Mapping):
            name, gen = handle_or_id.get("name"), handle_or_id.get("gen")
        else:
            raise ShmError("bad_handle", f"release takes a handle or (name, gen), got "
                           f"{handle_or_id!r:.60}")
        _check_name(name)
        if not _is_count(gen, 1 << 62):
            raise ShmError("bad_handle", f"generation must be an int >= 0, got {gen!r:.30}")
        seg = self._segments.get(name)
        if seg is None or not seg.busy or seg.gen != gen:
            return False
        seg.busy = False
        return True

    def _acquire(self, need: int) -> _Segment:
        """The smallest free segment of at least ``need`` bytes, growing the pool if needed."""
        if need > self.max_segment_bytes:
            raise ShmError("too_large", f"{need} bytes is over max_segment_bytes="
                           f"{self.max_segment_bytes}; send the frames over the socket")
        fits = [s for s in self._segments.values() if not s.busy and s.capacity >= need]
        if fits:
            return min(fits, key=lambda s: s.capacity)
        if len(self._segments) >= self.max_segments:
            free = [s for s in self._segments.values() if not s.busy]
            if not free:
                raise ShmError("pool_full", f"all {self.max_segments} segments await a release; "
                               "send the frames over the socket or wait for releases")
            self._drop(min(free, key=lambda s: s.capacity))  # free but too small: replace it
        return self._create(_align(max(need, self.min_segment_bytes), mmap.PAGESIZE))

    def _create(self, size: int) -> _Segment:
        for _ in range(8):
            name = f"gml-{os.getpid()}-{self._counter}-{self._tag}"
            self._counter += 1
            try:
                shm = shared_memory.SharedMemory(name=name, create=True, size=size)
            except FileExistsError:
                continue
            seg = _Segment(shm)
            self._segments[name] = seg
            return seg
        raise ShmError("no_name", "could not find a free shared-memory name in 8 tries")

    def _drop(self, seg: _Segment) -> None:
        name = seg.shm.name.lstrip("/")
        del self._segments[name]
        seg.shm.close()
        seg.shm.unlink()

    def close(self) -> None:
        """Unmap and unlink every segment this writer created (readers' live maps stay valid)."""
        for seg in list(self._segments.values()):
            self._drop(seg)
        self._closed = True

    def __enter__(self) -> ShmWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _open_readonly(name: str, writable: bool = False) -> mmap.mmap:
    """Map an existing segment read-only (or read-write, for a receiver that owns the segment
    until it releases it) without registering it with multiprocessing's resource
    tracker: on Python < 3.13 ``SharedMemory(name)`` registers every attach, and the tracker then
    unlinks the writer's segment when the reader exits (bpo-38119; ``track=False`` in 3.13)."""
    import _posixshmem  # the POSIX shm_open behind multiprocessing.shared_memory

    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR if writable else os.O_RDONLY, 0)
    except FileNotFoundError:
        raise ShmError("no_segment", f"segment {name} does not exist on this host (the sender "
                       "is elsewhere, or closed it); send the frames over the socket") from None
    except OSError as exc:
        raise ShmError("no_segment", f"cannot open segment {name}: {exc}") from None
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_BYTES:
            raise ShmError("bad_handle", f"segment {name} has {size} bytes, too small")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, size, prot=prot)
    finally:
        os.close(fd)


class ShmReader:
    """A receiver's read-only view of senders' segments; checks every (untrusted) handle."""

    def __init__(self, *, max_open: int = 32, writable: bool = False) -> None:
        if max_open < 1:
            raise ValueError("ShmReader needs max_open >= 1")
        self.max_open = max_open
        self.writable = writable  # map read-write: views are the receiver's until it releases
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()
        self._pinned: list[mmap.mmap] = []  # evicted while views were alive: closed later

    def _map(self, name: str) -> mmap.mmap:
        mm = self._maps.get(name)
        if mm is not None:
            self._maps.move_to_end(name)
            return mm
        mm = _open_readonly(name, self.writable)
        self._maps[name] = mm
        while len(self._maps) > self.max_open:
            self._pinned.append(self._maps.popitem(last=False)[1])
        self._close_unpinned()
        return mm

    def _close_unpinned(self) -> None:
        still = []
        for mm in self._pinned:
            try:
                mm.close()
            except BufferError:  # a caller still holds a view into it
                still.append(mm)
        self._pinned = still

    def _check(self, handle: Any) -> tuple[mmap.mmap, int, list[tuple[int, int]]]:
        """Validate a handle against the mapped segment; returns (map, gen, [(offset, length)])."""
        if not isinstance(handle, Mapping) or set(handle) != _HANDLE_KEYS:
            raise ShmError("bad_handle", f"a handle is a map with keys {sorted(_HANDLE_KEYS)}, got "
                           f"{handle!r:.80}")
        name = _check_name(handle["name"])
        gen, offsets, lengths = handle["gen"], handle["offsets"], handle["lengths"]
        if not _is_count(gen, 1 << 62) or gen == 0:
            raise ShmError("bad_handle", f"generation must be an int >= 1, got {gen!r:.30}")
        if not (isinstance(offsets, (list, tuple)) and isinstance(lengths, (list, tuple))
                and len(offsets) == len(lengths) <= MAX_BUFFERS):
            raise ShmError("bad_handle", "offsets and lengths must be lists of one length "
                           f"<= {MAX_BUFFERS}")
        mm = self._map(name)
        spans = []
        for i, (off, n) in enumerate(zip(offsets, lengths)):
            if not (_is_count(off, len(mm)) and _is_count(n, len(mm))
                    and off >= HEADER_BYTES and off + n <= len(mm)):
                raise ShmError("bad_handle", f"buffer {i} (offset {off!r:.20}, length {n!r:.20}) "
                               f"is not inside segment {name} of {len(mm)} bytes")
            spans.append((off, n))
        self._check_gen(mm, name, gen)
        return mm, gen, spans

    @staticmethod
    def _check_gen(mm: mmap.mmap, name: str, gen: int) -> None:
        if mm[:8] != MAGIC:
            raise ShmError("bad_handle", f"segment {name} does not start with {MAGIC!r}")
        now = int.from_bytes(mm[8:16], "little")
        if now != gen:
            raise ShmError("stale", f"segment {name} holds generation {now}, the handle says "
                           f"{gen}: it was released and rewritten; drop this message")

    def read_arrays(self, handle: Any) -> tuple[Any, list[Any]]:
        """``(base, views)``: a numpy array over the whole segment and a view of it per buffer
        (no copy). The base stays alive while any view does, so a ``weakref.finalize`` on it
        tells when the last view is gone: the moment to release the segment."""
        import numpy as np

        mm, _, spans = self._check(handle)
        base = np.frombuffer(mm, dtype=np.uint8)
        return base, [base[off:off + n] for off, n in spans]

    def read(self, handle: Any) -> list[memoryview]:
        """Read-only views of the handle's buffers in the segment (no copy); release after use."""
        mm, _, spans = self._check(handle)
        whole = memoryview(mm)
        return [whole[off:off + n] for off, n in spans]

    def read_copy(self, handle: Any) -> list[bytearray]:
        """Copies of the handle's buffers, checked unchanged after the copy: release right away."""
        mm, gen, spans = self._check(handle)
        with memoryview(mm) as whole:
            out = [bytearray(whole[off:off + n]) for off, n in spans]
        self._check_gen(mm, handle["name"], gen)  # rewritten while copying (released too early)?
        return out

    def close(self) -> None:
        """Unmap every segment (one with views still alive stays mapped until they are gone)."""
        self._pinned += list(self._maps.values())
        self._maps.clear()
        self._close_unpinned()

    def __enter__(self) -> ShmReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def offload(frames: Sequence[Any], writer: ShmWriter, *, min_bytes: int = 0) -> list[Any]:
    """``[SHM_TAG, header, msgpack(handle)]`` for packed wire ``frames`` whose data frames total at
    least ``min_bytes`` and fit a free segment; otherwise ``frames`` unchanged (send them as is)."""
    data = frames[1:]
    if not data or sum(memoryview(f).nbytes for f in data) < min_bytes:
        return list(frames)
    try:
        handle = writer.write(data)
    except ShmError as exc:
        if exc.reason in ("pool_full", "too_large"):
            return list(frames)
        raise
    return [SHM_TAG, frames[0], msgpack.packb(handle)]


def _is_offloaded(frames: Sequence[Any]) -> bool:
    try:
        tag = memoryview(frames[0])
        return len(frames) == 3 and tag.nbytes == len(SHM_TAG) and tag.tobytes() == SHM_TAG
    except TypeError:  # not buffers: unpack will say so
        return False


def offloaded_handle(frames: Sequence[Any]) -> dict[str, Any] | None:
    """The (still unchecked) handle of an offloaded message, None for a plain one; ShmError when
    the handle frame is not a small msgpack map."""
    if not _is_offloaded(frames):
        return None
    raw = memoryview(frames[2])
    if raw.nbytes > MAX_HANDLE_BYTES:
        raise ShmError("bad_handle", f"handle frame is {raw.nbytes} bytes, over {MAX_HANDLE_BYTES}")
    try:
        return msgpack.unpackb(raw, raw=False, max_ext_len=0)
    except Exception as exc:  # msgpack raises many types on garbage
        raise ShmError("bad_handle", f"handle frame is not msgpack "
                       f"({type(exc).__name__})") from None


def resolve(frames: Sequence[Any], reader: ShmReader) -> tuple[list[Any], dict[str, Any] | None]:
    """Received frames -> (wire frames for ``unpack``, the shm handle or None). An offloaded message
    becomes ``[header, *views into the segment]``; send ``release_token(handle)`` back once the
    views are no longer used. ShmError for a malformed or stale handle."""
    handle = offloaded_handle(frames)
    if handle is None:
        return list(frames), None
    return [frames[1], *reader.read(handle)], handle
