"""Wire format v1: one gossip message <-> a list of ZeroMQ frames (pure: no sockets, no clocks).

Layout (``docs/wire.md`` has the full table of fields, checks and rejection reasons)::

    frame 0      msgpack map  {"v": 1, "kind": str, "sender": int, "round": int,
                               "info": {str: value}, "tensors": [tensor, ...]}
                 tensor = [name: str, dtype: str, shape: [int, ...], codec: str,
                           meta: {str: value}, nbytes: [int, ...]]
    frame 1..N   one raw payload buffer per frame, in tensor order, then buffer order

Frame 0 states the byte length of every buffer, so a receiver knows the frame count
(``1 + sum(len(nbytes))``) and every frame's length before touching a payload byte. Nothing is
pickled. :func:`pack` passes payload buffers through as memoryviews (no copy) and :func:`unpack`
returns ``Payload.buffers`` as memoryviews of the received frames (no copy), ready for
``np.frombuffer`` / ``torch.frombuffer``.

Every field is checked on receipt; any failure raises :class:`WireError`, whose ``.reason`` is the
peer's rejection counter key. The top level is closed (``unknown_field``); ``info`` follows its
kind's closed schema (:mod:`gossipml.schema`, ``bad_info``) and comes back normalised. Frame 0 is
decoded value by value, each measured with msgpack's allocation-free ``skip`` before it is built,
within an object budget, so a hostile header costs bounded memory. Changing the top-level keys or
the tensor entry bumps :data:`WIRE_VERSION` (only one's own is accepted: ``bad_version``). Whether
a payload's byte count fits its dtype and shape is the codec's check (``decode``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import msgpack

from gossipml.codecs.base import Buffer, Payload
from gossipml.schema import (MAX_INFO_BYTES, MAX_INFO_ITEMS, MAX_INFO_KEYS, MAX_META_KEYS,
                             SCHEMAS, SchemaError, check_info, check_meta)

__all__ = [
    "WIRE_VERSION", "KINDS", "DTYPE_ITEMSIZE", "MAX_HEADER_BYTES", "MAX_RANK", "MAX_TENSORS",
    "MAX_BUFFERS_PER_TENSOR", "MAX_SENDER", "MAX_ROUND", "MAX_NUMEL", "MAX_ENTRY_BYTES",
    "MAX_HEADER_OBJECTS", "REASONS", "WireError", "Message", "pack", "unpack", "message_nbytes", "dtype_itemsize",
]

WIRE_VERSION = 1
#: Message kinds a v1 peer understands: those with an info schema.
KINDS = frozenset(SCHEMAS)
#: Allowed tensor dtype names (torch names without the prefix) and their item sizes in bytes.
DTYPE_ITEMSIZE: Mapping[str, int] = {
    "bfloat16": 2, "float16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1,
    "int16": 2, "int32": 4, "int64": 8, "bool": 1,
}
#: Every ``WireError.reason`` this module raises (docs/wire.md explains each).
REASONS = frozenset({
    "frame_count", "not_buffer", "too_large", "not_msgpack", "bad_header", "missing_field",
    "bad_version", "unknown_field", "bad_kind", "bad_field", "duplicate_tensor", "unknown_tensor",
    "wrong_dtype", "wrong_shape", "truncated", "overlong", "bad_info",
})
MAX_HEADER_BYTES = 1 << 22  # frame 0 is refused before msgpack decoding past this
MAX_RANK = 32
MAX_TENSORS = 1 << 14  # a 70B-parameter LLM has under 1000 tensors
MAX_BUFFERS_PER_TENSOR = 16
MAX_SENDER = (1 << 31) - 1
MAX_ROUND = (1 << 62) - 1
MAX_NUMEL = 1 << 48  # a sanity bound on a shape; codecs apply their own, tighter ones
MAX_NAME_CHARS = 1024
MAX_CODEC_CHARS = 128
MAX_ENTRY_BYTES = 1 << 13  # one encoded tensor entry, measured before it is decoded
#: msgpack objects (containers and scalars) one header may keep: bounds its memory (~30 MB)
MAX_HEADER_OBJECTS = 1 << 18
_TOP_KEYS = frozenset({"v", "kind", "sender", "round", "info", "tensors"})
_TENSOR_FIELDS = ("name", "dtype", "shape", "codec", "meta", "nbytes")


class WireError(ValueError):
    """A message failed a wire check; ``reason`` is the slug counted by the receiving peer."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One gossip message: kind, sender id, round (clock), encoded tensors, small msgpack extras."""

    kind: str
    sender: int
    round: int
    tensors: tuple[tuple[str, Payload], ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)


def dtype_itemsize(name: str) -> int:
    """Bytes per element of an allowed dtype name; WireError(``bad_field``) for any other name."""
    if not isinstance(name, str) or name not in DTYPE_ITEMSIZE:
        raise WireError("bad_field", f"dtype {name!r} is not one of {sorted(DTYPE_ITEMSIZE)}")
    return DTYPE_ITEMSIZE[name]


def message_nbytes(frames: Iterable[Buffer]) -> int:
    """Total bytes of all frames of a message (header included)."""
    return sum(memoryview(f).nbytes for f in frames)


# ---- checks shared by pack and unpack --------------------------------------------------------
def _bad(detail: str) -> WireError:
    return WireError("bad_field", detail)


def _check_int(x: Any, what: str, hi: int) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= hi:
        raise _bad(f"{what} must be an int in [0, {hi}], got {x!r:.60}")
    return x


def _check_str(x: Any, what: str, max_chars: int) -> str:
    if not isinstance(x, str) or not 0 < len(x) <= max_chars or not x.isprintable():
        raise _bad(f"{what} must be a printable str of 1..{max_chars} chars, got {x!r:.60}")
    return x


def _check_shape(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (list, tuple)) or len(x) > MAX_RANK:
        raise _bad(f"{what} must be a list of at most {MAX_RANK} ints, got {x!r:.60}")
    shape = tuple(_check_int(d, f"{what}[{i}]", MAX_NUMEL) for i, d in enumerate(x))
    if math.prod(shape) > MAX_NUMEL:
        raise _bad(f"{what} {shape} has more than {MAX_NUMEL} elements")
    return shape


def _check_tensor(entry: Any, i: int) -> tuple[tuple[str, str, tuple[int, ...], str, dict,
                                                  list[int]], int]:
    """Validate one tensor entry of the header (the 6-element array of the module docstring);
    returns it and its msgpack object count. An encoded entry (a frame-0 slice) is decoded here,
    under MAX_ENTRY_BYTES."""
    if isinstance(entry, memoryview):
        entry = _decode_bounded(entry, f"tensors[{i}]", MAX_ENTRY_BYTES, "bad_field",
                                max(MAX_RANK, MAX_BUFFERS_PER_TENSOR), MAX_META_KEYS)
    if not isinstance(entry, (list, tuple)) or len(entry) != len(_TENSOR_FIELDS):
        raise _bad(f"tensors[{i}] must be a list {list(_TENSOR_FIELDS)}, got {entry!r:.80}")
    name = _check_str(entry[0], f"tensors[{i}].name", MAX_NAME_CHARS)
    at = f"tensor {name!r}"
    dtype = entry[1]
    dtype_itemsize(dtype)
    shape = _check_shape(entry[2], f"{at} shape")
    codec = _check_str(entry[3], f"{at} codec", MAX_CODEC_CHARS)
    try:
        meta, meta_objects = check_meta(entry[4])
    except SchemaError as exc:
        raise _bad(f"{at} {exc}") from None
    sizes = entry[5]
    if not isinstance(sizes, (list, tuple)) or len(sizes) > MAX_BUFFERS_PER_TENSOR:
        raise _bad(f"{at} nbytes must be a list of at most {MAX_BUFFERS_PER_TENSOR} ints")
    nbytes = [_check_int(n, f"{at} nbytes[{j}]", MAX_NUMEL * 8) for j, n in enumerate(sizes)]
    objects = 7 + len(shape) + meta_objects + len(nbytes)
    return (name, dtype, shape, codec, meta, nbytes), objects


def _check_header(h: Any) -> tuple[str, int, int, dict, list]:
    """Validate a decoded frame 0; returns (kind, sender, round, info, tensor entries)."""
    if not isinstance(h, Mapping):
        raise WireError("bad_header", f"frame 0 must be a msgpack map, got {type(h).__name__}")
    if "v" not in h:
        raise WireError("missing_field", "header has no 'v' (wire version)")
    if type(h["v"]) is not int or h["v"] != WIRE_VERSION:
        raise WireError("bad_version", f"wire version {h['v']!r:.20}, this peer speaks "
                        f"{WIRE_VERSION}; run the same gossipml version on every peer")
    unknown = [k for k in h if k not in _TOP_KEYS]
    if unknown:
        raise WireError("unknown_field", f"header keys {unknown[:5]!r:.80} are not in v1; "
                        "put extras in 'info'")
    missing = sorted(_TOP_KEYS - set(h))
    if missing:
        raise WireError("missing_field", f"header lacks {missing}")
    if not isinstance(h["kind"], str) or h["kind"] not in KINDS:
        raise WireError("bad_kind", f"kind {h['kind']!r:.40} is not one of {sorted(KINDS)}")
    sender = _check_int(h["sender"], "sender", MAX_SENDER)
    rnd = _check_int(h["round"], "round", MAX_ROUND)
    info = h["info"]
    if isinstance(info, memoryview):
        info = _decode_bounded(info, "info", MAX_INFO_BYTES, "bad_info", MAX_INFO_ITEMS,
                               MAX_INFO_KEYS)
    try:
        info = check_info(h["kind"], info)
    except SchemaError as exc:
        raise WireError("bad_info", f"{h['kind']} message: {exc}") from None
    tensors = h["tensors"]
    if not isinstance(tensors, (list, tuple)) or len(tensors) > MAX_TENSORS:
        raise _bad(f"tensors must be a list of at most {MAX_TENSORS} entries, got {tensors!r:.60}")
    entries, seen, objects = [], set(), 1 + len(tensors)
    for i, t in enumerate(tensors):
        entry, n_objects = _check_tensor(t, i)
        objects += n_objects
        if objects > MAX_HEADER_OBJECTS:
            raise WireError("too_large", f"header holds more than {MAX_HEADER_OBJECTS} msgpack "
                            "objects; send fewer tensors or smaller metas")
        if entry[0] in seen:
            raise WireError("duplicate_tensor", f"tensor {entry[0]!r} appears twice")
        seen.add(entry[0])
        entries.append(entry)
    return h["kind"], sender, rnd, info, entries


# ---- frames ------------------------------------------------------------------------------------
def _byte_view(buf: Any, what: str, reason: str) -> memoryview:
    """A flat byte memoryview over ``buf`` without copying; WireError(reason) if impossible."""
    try:
        view = memoryview(buf)
    except TypeError:
        raise WireError(reason, f"{what} is a {type(buf).__name__}, not a bytes-like "
                        "object") from None
    if view.ndim == 1 and view.format == "B" and view.c_contiguous:
        return view
    if not view.c_contiguous:
        raise WireError(reason, f"{what} is not C-contiguous; pass a contiguous buffer")
    try:
        return view.cast("B")
    except TypeError:  # a non-native format ('>f4'): contiguous, so its bytes go out as they are
        return view


def pack(msg: Message) -> list[Buffer]:
    """Frames of ``msg``: the msgpack header, then every payload buffer as a memoryview (no copy).

    Runs the receiver's checks on the header first, so a bad message fails here, at the sender."""
    if not isinstance(msg, Message):
        raise _bad(f"pack takes a Message, got {type(msg).__name__}")
    entries, frames = [], []
    for i, item in enumerate(msg.tensors):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Payload)):
            raise _bad(f"tensors[{i}] must be a (name, Payload) pair, got {item!r:.80}")
        name, payload = item
        views = [_byte_view(b, f"tensor {name!r} buffer {j}", "bad_field")
                 for j, b in enumerate(payload.buffers)]
        shape = list(payload.shape) if isinstance(payload.shape, (tuple, list)) else payload.shape
        meta = dict(payload.meta) if isinstance(payload.meta, Mapping) else payload.meta
        entries.append([name, payload.dtype, shape, payload.codec, meta, [v.nbytes for v in views]])
        frames += views
    header = {"v": WIRE_VERSION, "kind": msg.kind, "sender": msg.sender, "round": msg.round,
              "info": dict(msg.info) if isinstance(msg.info, Mapping) else msg.info,
              "tensors": entries}
    header["info"] = _check_header(header)[3]
    try:
        info_bytes = len(msgpack.packb(header["info"], use_bin_type=True))
        head = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _bad(f"header does not pack as msgpack: {exc}") from None
    if info_bytes > MAX_INFO_BYTES:
        raise WireError("bad_info", f"info is {info_bytes} bytes packed, over {MAX_INFO_BYTES}")
    if len(head) > MAX_HEADER_BYTES:
        raise WireError("too_large", f"header is {len(head)} bytes, over {MAX_HEADER_BYTES}; "
                        "send fewer tensors or a smaller info map")
    return [head, *frames]


class _Opaque(str):
    """A header value too big (or too odd) to decode: no kind, key or field matches it."""

    @classmethod
    def of(cls, span: memoryview) -> "_Opaque":
        """The stand-in for the msgpack value in ``span``."""
        return cls(f"<a {span.nbytes}-byte msgpack value>")


_MAP_MARKERS = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
_ARRAY_MARKERS = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])
_EXT_MARKERS = frozenset([0xC7, 0xC8, 0xC9, *range(0xD4, 0xD9)])
_SMALL_VALUE_BYTES = 256  # v, kind, sender, round and top-level keys are far smaller


def _decode_bounded(view: memoryview, what: str, max_bytes: int, reason: str,
                    max_items: int, max_keys: int) -> Any:
    """msgpack-decode one value of frame 0 (already known to be well formed) under byte, array
    and map bounds; WireError(reason) when over them."""
    if view.nbytes > max_bytes:
        raise WireError(reason, f"{what} is {view.nbytes} bytes of msgpack, over {max_bytes}")
    try:
        return msgpack.unpackb(view, raw=False, use_list=True, strict_map_key=False,
                               max_str_len=max_bytes, max_bin_len=max_bytes, max_ext_len=0,
                               max_array_len=max_items, max_map_len=max_keys)
    except Exception as exc:  # over a bound, an ext type, an unhashable key
        raise WireError(reason, f"{what} does not decode within {max_items} items, "
                        f"{max_keys} keys ({type(exc).__name__}: {exc})"[:200]) from None


def _split(unpacker: msgpack.Unpacker, view: memoryview, count: int) -> list[memoryview]:
    """The byte slices of the next ``count`` msgpack values (skip builds no Python object)."""
    spans = []
    for _ in range(count):
        start = unpacker.tell()
        unpacker.skip()
        spans.append(view[start:unpacker.tell()])
    return spans


def _top_value(key: Any, span: memoryview) -> Any:
    """A top-level value: info and tensor entries stay encoded for the bounded checks."""
    if key == "info":
        return span
    if key == "tensors":
        unpacker = msgpack.Unpacker(max_buffer_size=max(span.nbytes, 1))
        unpacker.feed(span)
        n = unpacker.read_array_header() if span[0] in _ARRAY_MARKERS else MAX_TENSORS + 1
        return _Opaque.of(span) if n > MAX_TENSORS else _split(unpacker, span, n)
    return _small(span)


def _small(span: memoryview) -> Any:
    """A key or scalar field of the header, or an :class:`_Opaque` stand-in."""
    try:
        return _decode_bounded(span, "a header value", _SMALL_VALUE_BYTES, "bad_field", 8, 8)
    except WireError:
        return _Opaque.of(span)


def _decode_header(view: memoryview) -> Any:
    """frame 0 as a map of its top-level keys; values are decoded one by one, each measured
    first (``info`` and tensor entries stay encoded slices until :func:`_check_header`)."""
    n = view.nbytes
    if n > MAX_HEADER_BYTES:
        raise WireError("too_large", f"frame 0 is {n} bytes, over {MAX_HEADER_BYTES}")
    unpacker = msgpack.Unpacker(max_buffer_size=max(n, 1))
    unpacker.feed(view)
    try:
        is_map = n > 0 and view[0] in _MAP_MARKERS
        if is_map:
            keys = unpacker.read_map_header()
            if keys > 4 * len(_TOP_KEYS):
                raise WireError("unknown_field", f"header has {keys} keys, v1 has {len(_TOP_KEYS)}")
            spans = _split(unpacker, view, 2 * keys)
        else:
            unpacker.skip()
        if unpacker.tell() != n:
            raise ValueError(f"{n - unpacker.tell()} trailing bytes")
    except WireError:
        raise
    except Exception as exc:  # msgpack raises many types (OutOfData, FormatError, StackError...)
        raise WireError("not_msgpack", f"frame 0 is not one msgpack object "
                        f"({type(exc).__name__}: {exc})"[:200]) from None
    if not is_map:
        if view[0] in _EXT_MARKERS:
            raise WireError("not_msgpack", "frame 0 is a msgpack ext type; ext types are refused")
        raise WireError("bad_header", "frame 0 must be a msgpack map, got another msgpack value")
    header = {}
    for k_span, v_span in zip(spans[::2], spans[1::2]):
        key = _small(k_span)
        try:
            header[key] = _top_value(key, v_span)
        except TypeError:  # an unhashable key (a list)
            raise WireError("unknown_field", f"header key {key!r:.40} is no str") from None
    return header


def _check_expected(entries: list, expected: Mapping[str, tuple[str, Sequence[int]]]) -> None:
    for name, dtype, shape, *_ in entries:
        if name not in expected:
            raise WireError("unknown_tensor", f"tensor {name!r} is not in this model")
        want_dtype, want_shape = expected[name]
        if dtype != want_dtype:
            raise WireError("wrong_dtype", f"tensor {name!r} is {dtype}, expected {want_dtype}")
        if shape != tuple(want_shape):
            raise WireError("wrong_shape", f"tensor {name!r} has shape {list(shape)}, "
                            f"expected {list(want_shape)}")


def unpack(frames: Sequence[Buffer], *, max_message_bytes: int | None = None,
           expected: Mapping[str, tuple[str, Sequence[int]]] | None = None) -> Message:
    """Check every field of a received message and return it; payload buffers view the frames.

    ``expected`` maps tensor name -> (dtype, shape): a tensor not in it or with another dtype or
    shape is refused (tensors it names but the message lacks are the caller's business). Any
    failure raises :class:`WireError`; no other exception escapes for any input."""
    if not isinstance(frames, (list, tuple)) or not frames:
        raise WireError("frame_count", f"expected a non-empty list of frames, got {frames!r:.60}")
    views = [_byte_view(f, f"frame {i}", "not_buffer") for i, f in enumerate(frames)]
    total = sum(v.nbytes for v in views)
    if max_message_bytes is not None and total > max_message_bytes:
        raise WireError("too_large", f"message is {total} bytes, over max_message_bytes="
                        f"{max_message_bytes}")
    kind, sender, rnd, info, entries = _check_header(_decode_header(views[0]))
    n_buffers = sum(len(e[5]) for e in entries)
    if len(views) != 1 + n_buffers:
        raise WireError("frame_count", f"header declares {n_buffers} buffers, "
                        f"got {len(views) - 1} data frames")
    if expected is not None:
        _check_expected(entries, expected)
    tensors, k = [], 1
    for name, dtype, shape, codec, meta, nbytes in entries:
        bufs = []
        for j, n in enumerate(nbytes):
            got = views[k].nbytes
            if got != n:
                raise WireError("truncated" if got < n else "overlong",
                                f"tensor {name!r} buffer {j} is {got} bytes, header says {n}")
            bufs.append(views[k])
            k += 1
        tensors.append((name, Payload(codec, dtype, shape, meta, tuple(bufs))))
    return Message(kind, sender, rnd, tuple(tensors), info)
