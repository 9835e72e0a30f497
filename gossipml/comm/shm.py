"""Same-host fast path: tensor bytes through shared-memory files, only a small handle on the socket.

A :class:`ShmWriter` (one per sender and destination, used by one thread) keeps a small pool of
segments: files in a shared-memory directory (``/dev/shm`` unless told otherwise, see
:func:`segment_dir`). ``write(buffers)`` copies the buffers into a free segment (one memcpy into a
reused mapping) and returns a msgpack-able handle ``{"name", "gen", "size", "offsets",
"lengths"}`` to send instead of the data frames. The segment stays busy until the receiver's
release token (``release_token(handle)``) comes back to ``writer.release``, or until
``release_timeout_s`` passes: then the writer unlinks it (``reclaim``), so a receiver that never
answers cannot pin memory. Every refusal raises :class:`ShmError` with a ``reason`` slug; the
reasons in :data:`FALLBACK_REASONS` mean "send the frames over the socket instead".

What the writer guarantees (issue #15): a segment is created ``O_EXCL`` with mode 0600 (set again
with ``fchmod``, so the umask cannot widen it), and its space is reserved with
``posix_fallocate`` before it is mapped, so a full ``/dev/shm`` is an ``ENOSPC`` at creation
(``no_space``: fall back), never a SIGBUS while writing into a sparse mapping.

What the receiver does: :class:`ShmReader` never maps a segment. It opens the file (``O_NOFOLLOW``,
``O_NONBLOCK``), checks with ``fstat`` that it is a regular file owned by our uid with no group or
other permission bits and exactly the handle's size, then copies the buffers out with
``os.preadv`` into fresh memory it owns, checking the generation stamp before and after. A sender
that truncates the file, or dies mid-write, yields a short read: a counted ``truncated`` error,
never a signal. The copies are writable and ours, so the identity codec decodes them in place, and
the segment is released as soon as the copy is done.

Why copy out rather than map a sealed memfd (zero copy): the receiver must not decode tensors
from memory the sender can still write (a check-then-use race: NaN checks pass, then the bytes
change), so a read-only mapping is copied by the codec anyway (``codecs/dense.py``: read-only
buffers are copied). A copy is therefore paid either way; ``preadv`` pays it without any mapping,
works wherever the files are (no ``/proc/<pid>/fd`` access, which fails across pid namespaces),
and frees the segment at once instead of when the last tensor dies. On 64 MiB the two copies
cost the same (preadv into fresh memory 8.3 GB/s, a copy out of a read-only map 8.3 GB/s, on an
unloaded host; docs/design-notes.md).

Segment layout: bytes 0..7 ``b"GMLSHM01"``, 8..15 the generation (little-endian u64; 0 while a
write is in progress), data from byte 64, every buffer at a 64-byte aligned offset. Names are
``gml-<pid>-<counter>-<8 hex>`` (the hex random per writer), never reused.
"""

from __future__ import annotations

import mmap
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import msgpack
import numpy as np

from gossipml.comm.shmfile import (SHM_DIR_ENV, ShmError, create_segment, open_segment,
                                   read_exact, segment_dir)

__all__ = ["ShmError", "ShmWriter", "ShmReader", "release_token", "offload", "resolve",
           "envelope", "offloaded_handle", "create_segment", "open_segment", "segment_dir", "SHM_TAG",
           "NAME_PATTERN", "FALLBACK_REASONS", "SHM_DIR_ENV"]

MAGIC = b"GMLSHM01"
HEADER_BYTES = 64
ALIGN_BYTES = 64
MAX_BUFFERS = 1 << 16
NAME_PATTERN = re.compile(r"gml-[0-9]{1,10}-[0-9]{1,12}-[0-9a-f]{8}")
#: Frame 0 of a message whose data frames live in shared memory (a wire header is a msgpack map,
#: which never starts with this byte string).
SHM_TAG = b"gml-shm1"
MAX_HANDLE_BYTES = 1 << 20
#: ShmError reasons from ``ShmWriter.write`` that mean: send this message over the socket.
FALLBACK_REASONS = frozenset({"pool_full", "too_large", "no_space", "create_failed", "truncated"})
_HANDLE_KEYS = frozenset({"name", "gen", "size", "offsets", "lengths"})


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _is_count(x: Any, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= hi


def _check_name(name: Any, pattern: re.Pattern[str] = NAME_PATTERN) -> str:
    if not isinstance(name, str) or pattern.fullmatch(name) is None:
        raise ShmError("bad_handle", f"segment name {name!r:.60} is not a gossipml segment "
                       f"name ({pattern.pattern})")
    return name


def _bytes_of(buf: Any) -> memoryview:
    view = memoryview(buf)
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def release_token(handle: Mapping[str, Any]) -> dict[str, Any]:
    """The tiny msgpack-able map the receiver sends back so the writer can reuse the segment."""
    return {"name": handle["name"], "gen": handle["gen"]}


@dataclass
class _Segment:
    fd: int
    map: mmap.mmap
    capacity: int
    gen: int = 0
    busy: bool = False
    sent_at: float = 0.0


class ShmWriter:
    """A sender's pool of reusable shared-memory segments for one destination (one thread only)."""

    def __init__(self, *, min_segment_bytes: int = 1 << 20, max_segments: int = 4,
                 max_segment_bytes: int = 1 << 36, release_timeout_s: float = 30.0,
                 directory: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (min_segment_bytes >= 0 and max_segments >= 1 and max_segment_bytes > HEADER_BYTES
                and release_timeout_s > 0):
            raise ValueError("ShmWriter needs min_segment_bytes >= 0, max_segments >= 1, "
                             f"max_segment_bytes > {HEADER_BYTES} and release_timeout_s > 0")
        self.min_segment_bytes = min_segment_bytes
        self.max_segments = max_segments
        self.max_segment_bytes = max_segment_bytes
        self.release_timeout_s = release_timeout_s
        self.directory = segment_dir(directory)
        self.expired = 0  # segments unlinked because no release came in time
        self.released = 0
        self._clock = clock
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
        """Copy ``buffers`` into a free segment and return its handle; ShmError with a reason in
        FALLBACK_REASONS when the frames should go over the socket instead."""
        if self._closed:
            raise ShmError("closed", "this ShmWriter is closed; make a new one")
        self.reclaim()
        views = [_bytes_of(b) for b in buffers]
        offsets, pos = [], HEADER_BYTES
        for v in views:
            offsets.append(pos)
            pos = _align(pos + v.nbytes, ALIGN_BYTES)
        seg = self._acquire(pos)
        name = self._name_of(seg)
        if os.fstat(seg.fd).st_size != seg.capacity:  # someone shrank it: writing would SIGBUS
            self._drop(seg)
            raise ShmError("truncated", f"segment {name} changed size under us; dropped it")
        buf = seg.map
        buf[8:16] = bytes(8)  # generation 0: a write is in progress
        for v, off in zip(views, offsets):
            buf[off:off + v.nbytes] = v
        seg.gen += 1
        seg.busy, seg.sent_at = True, self._clock()
        buf[:16] = MAGIC + seg.gen.to_bytes(8, "little")
        return {"name": name, "gen": seg.gen, "size": seg.capacity, "offsets": offsets,
                "lengths": [v.nbytes for v in views]}

    def release(self, handle_or_id: Any) -> bool:
        """Mark a segment free again from a handle or release token; False if unknown or stale
        (already released, expired, or a later write reused it). ShmError if malformed."""
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
        self.released += 1
        return True

    def reclaim(self) -> int:
        """Unlink every segment busy for over ``release_timeout_s``; returns how many."""
        deadline = self._clock() - self.release_timeout_s
        old = [s for s in self._segments.values() if s.busy and s.sent_at < deadline]
        for seg in old:
            self._drop(seg)
        self.expired += len(old)
        return len(old)

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
                fd = create_segment(os.path.join(self.directory, name), size)
            except FileExistsError:
                continue
            try:
                seg = _Segment(fd, mmap.mmap(fd, size), size)
            except OSError as exc:
                os.close(fd)
                os.unlink(os.path.join(self.directory, name))
                raise ShmError("create_failed", f"cannot map {name}: {exc.strerror}") from None
            self._segments[name] = seg
            return seg
        raise ShmError("create_failed", "could not find a free shared-memory name in 8 tries")

    def _name_of(self, seg: _Segment) -> str:
        return next(n for n, s in self._segments.items() if s is seg)

    def _drop(self, seg: _Segment) -> None:
        name = self._name_of(seg)
        del self._segments[name]
        seg.map.close()
        os.close(seg.fd)
        try:
            os.unlink(os.path.join(self.directory, name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Unmap and unlink every segment this writer created (a reader mid-copy still finishes)."""
        for seg in list(self._segments.values()):
            self._drop(seg)
        self._closed = True

    def __enter__(self) -> ShmWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_handle(handle: Any) -> tuple[str, int, int, list[tuple[int, int]]]:
    """Validate an untrusted handle's fields: ``(name, gen, size, [(offset, length)])``."""
    if not isinstance(handle, Mapping) or set(handle) != _HANDLE_KEYS:
        raise ShmError("bad_handle", f"a handle is a map with keys {sorted(_HANDLE_KEYS)}, got "
                       f"{handle!r:.80}")
    name = _check_name(handle["name"])
    gen, size, offsets, lengths = (handle[k] for k in ("gen", "size", "offsets", "lengths"))
    if not _is_count(gen, 1 << 62) or gen == 0:
        raise ShmError("bad_handle", f"generation must be an int >= 1, got {gen!r:.30}")
    if not _is_count(size, 1 << 40) or size < HEADER_BYTES:
        raise ShmError("bad_handle", f"size must be an int >= {HEADER_BYTES}, got {size!r:.30}")
    if not (isinstance(offsets, (list, tuple)) and isinstance(lengths, (list, tuple))
            and len(offsets) == len(lengths) <= MAX_BUFFERS):
        raise ShmError("bad_handle", "offsets and lengths must be lists of one length "
                       f"<= {MAX_BUFFERS}")
    spans = []
    for i, (off, n) in enumerate(zip(offsets, lengths)):
        if not (_is_count(off, size) and _is_count(n, size) and off >= HEADER_BYTES
                and off + n <= size):
            raise ShmError("bad_handle", f"buffer {i} (offset {off!r:.20}, length {n!r:.20}) "
                           f"is not inside segment {name} of {size} bytes")
        spans.append((off, n))
    return name, gen, size, spans


def _check_gen(fd: int, name: str, gen: int) -> None:
    head = os.pread(fd, 16, 0)
    if len(head) < 16 or head[:8] != MAGIC:
        raise ShmError("bad_handle", f"segment {name} does not start with {MAGIC!r}")
    now = int.from_bytes(head[8:16], "little")
    if now != gen:
        raise ShmError("stale", f"segment {name} holds generation {now}, the handle says {gen}: "
                       "it was released and rewritten (or is being written); drop this message")


class ShmReader:
    """A receiver's checked reads of senders' segments: copies out, never maps."""

    def __init__(self, *, directory: str | None = None) -> None:
        self.directory = segment_dir(directory)

    def read_copy(self, handle: Any) -> list[np.ndarray]:
        """Copies of the handle's buffers (writable uint8 arrays the caller owns), checked
        unchanged after the copy: release the segment right away."""
        name, gen, size, spans = _check_handle(handle)
        fd = open_segment(self.directory, name, size)
        try:
            _check_gen(fd, name, gen)
            out = [read_exact(fd, off, n, name) for off, n in spans]
            _check_gen(fd, name, gen)  # rewritten while we copied (released too early)?
            return out
        finally:
            os.close(fd)

    read = read_copy  # the only way to read: a map of a sender's file could SIGBUS us

    def close(self) -> None:
        """Nothing is held between reads; kept so owners can close every part alike."""

    def __enter__(self) -> ShmReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def envelope(header: Any, handle: Mapping[str, Any]) -> list[Any]:
    """The three frames of an offloaded message: ``[SHM_TAG, header, msgpack(handle)]``."""
    return [SHM_TAG, header, msgpack.packb(dict(handle))]


def offload(frames: Sequence[Any], writer: ShmWriter, *, min_bytes: int = 0) -> list[Any]:
    """``[SHM_TAG, header, msgpack(handle)]`` for packed wire ``frames`` whose data frames total at
    least ``min_bytes`` and fit a free segment; otherwise ``frames`` unchanged (send them as is)."""
    data = frames[1:]
    if not data or sum(memoryview(f).nbytes for f in data) < min_bytes:
        return list(frames)
    try:
        handle = writer.write(data)
    except ShmError as exc:
        if exc.reason in FALLBACK_REASONS:
            return list(frames)
        raise
    return envelope(frames[0], handle)


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
    becomes ``[header, *copies of its buffers]``; send ``release_token(handle)`` back at once.
    ShmError for a malformed, foreign, truncated or stale segment."""
    handle = offloaded_handle(frames)
    if handle is None:
        return list(frames), None
    return [frames[1], *reader.read_copy(handle)], handle
