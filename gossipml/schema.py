"""The open maps of a message: every kind's ``info`` (a closed schema of keys, types, ranges and
sizes) and a codec's ``meta`` (flat scalars). Pure.

``gossipml.wire.unpack`` calls :func:`check_info` on every received message after the header
checks, and ``pack`` calls it before sending, so what the peer itself sends always passes. The
schema is closed: a key a kind does not list is refused, like an unknown header key, so a field
can never be silently dropped by a peer that does not know it. Every key is optional (a reader
supplies its own default). :func:`check_info` returns a *new* dict holding only normalised values
(bools, ints, floats, bounded strings, tuples), so nothing the sender built is kept. Any failure
raises :class:`SchemaError` naming the field; the wire turns it into ``WireError("bad_info")``.
:func:`check_meta` bounds a codec's ``meta`` (``bad_field`` on the wire); what the values mean is
each codec's check, against the tensor it decodes.

``docs/wire.md`` has the table of every kind's fields.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping

__all__ = [
    "SchemaError", "SCHEMAS", "check_info", "MAX_INFO_BYTES", "MAX_INFO_ITEMS", "MAX_INFO_KEYS",
    "MAX_HEARS", "MAX_VIEW_ENTRIES", "MAX_ADDRESS_CHARS", "MAX_NUM_SAMPLES", "MAX_SEQ",
]

#: Encoded size of ``info`` in frame 0, checked before it is decoded.
MAX_INFO_BYTES = 1 << 16
#: The longest array / largest map msgpack may build inside ``info`` (bounds decoding).
MAX_INFO_ITEMS = 4096
MAX_INFO_KEYS = 16
#: Peer ids one heartbeat may say it hears.
MAX_HEARS = 4096
#: Entries of one membership shuffle (same as ``policies.membership.MAX_WIRE_ENTRIES``).
MAX_VIEW_ENTRIES = 256
MAX_ADDRESS_CHARS = 256
#: ``num_samples`` bound: far above any local data set, far below what would swamp an average.
MAX_NUM_SAMPLES = 1 << 40
MAX_SEQ = (1 << 62) - 1
#: A codec meta: keys, the longest key / str / bin value, the longest flat list value.
MAX_META_KEYS = 32
MAX_META_CHARS = 256
MAX_META_LIST = 32
_MAX_PEER_ID = (1 << 31) - 1
_MAX_GEN = 1 << 62
_PROBE_NAME = re.compile(r"gml-probe-[0-9a-f]{16}")
_TCP = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}")
_LOCAL = re.compile(r"(ipc|inproc)://[^\s\x00]+")
_TOKEN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class SchemaError(ValueError):
    """An ``info`` or ``meta`` map broke its schema; the message names the field."""


Check = Callable[[Any, str], Any]


def _fail(field: str, want: str, value: Any) -> SchemaError:
    return SchemaError(f"info.{field} must be {want}, got {value!r:.60}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def flag(value: Any, field: str) -> bool:
    """A msgpack bool (0/1 are not bools)."""
    if not isinstance(value, bool):
        raise _fail(field, "true or false", value)
    return value


def count(hi: int) -> Check:
    """An int in [0, hi]."""
    def check(value: Any, field: str) -> int:
        if not _is_int(value) or not 0 <= value <= hi:
            raise _fail(field, f"an int in [0, {hi}]", value)
        return int(value)
    return check


def real(lo: float = -math.inf, *, allow_inf: bool = False) -> Check:
    """A number >= lo, finite (``+inf`` too with ``allow_inf``); never NaN."""
    def check(value: Any, field: str) -> float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and not math.isnan(value) and value >= lo
              and (math.isfinite(value) or (allow_inf and value == math.inf)))
        if not ok:
            what = "a number" + ("" if lo == -math.inf else f" >= {lo}")
            raise _fail(field, what + (" (or +inf)" if allow_inf else ", finite"), value)
        return float(value)
    return check


def address(value: Any, field: str) -> str:
    """A ZeroMQ endpoint: ``tcp://host:port`` (port 1..65535), ``ipc://path`` or ``inproc://name``."""
    ok = isinstance(value, str) and 0 < len(value) <= MAX_ADDRESS_CHARS
    if ok and _TCP.fullmatch(value):
        ok = 1 <= int(value.rsplit(":", 1)[1]) <= 65535
    elif ok:
        ok = _LOCAL.fullmatch(value) is not None and value.isprintable()
    if not ok:
        raise _fail(field, f"an endpoint tcp://host:port, ipc://path or inproc://name of at "
                    f"most {MAX_ADDRESS_CHARS} chars", value)
    return value


def peer_ids(value: Any, field: str) -> tuple[int, ...]:
    """At most MAX_HEARS peer ids (ints in [0, 2**31 - 1]), returned sorted and unique."""
    if not isinstance(value, (list, tuple)) or len(value) > MAX_HEARS:
        raise _fail(field, f"a list of at most {MAX_HEARS} peer ids", value)
    for i, x in enumerate(value):
        if not _is_int(x) or not 0 <= x <= _MAX_PEER_ID:
            raise _fail(f"{field}[{i}]", f"a peer id in [0, {_MAX_PEER_ID}]", x)
    return tuple(sorted(set(value)))


def view_entries(value: Any, field: str) -> list[list[Any]]:
    """Membership entries ``[peer_id, address, age_s]`` (``policies.membership``), at most 256."""
    if not isinstance(value, (list, tuple)) or len(value) > MAX_VIEW_ENTRIES:
        raise _fail(field, f"a list of at most {MAX_VIEW_ENTRIES} [peer_id, address, age_s]",
                    value)
    out = []
    for i, e in enumerate(value):
        at = f"{field}[{i}]"
        if not isinstance(e, (list, tuple)) or len(e) != 3:
            raise _fail(at, "[peer_id, address, age_s]", e)
        out.append([count(_MAX_PEER_ID)(e[0], f"{at}.peer_id"), address(e[1], f"{at}.address"),
                    real(0.0)(e[2], f"{at}.age_s")])
    return out


def shm_token(value: Any, field: str) -> dict[str, Any]:
    """A shared-memory release token ``{"name": str, "gen": int}`` (``comm.shm.release_token``)."""
    if not isinstance(value, Mapping) or set(value) != {"name", "gen"}:
        raise _fail(field, 'a map {"name": str, "gen": int}', value)
    name = value["name"]
    if not isinstance(name, str) or _TOKEN_NAME.fullmatch(name) is None:
        raise _fail(f"{field}.name", "a segment name of 1..64 chars [A-Za-z0-9._-]", name)
    return {"name": name, "gen": count(_MAX_GEN)(value["gen"], f"{field}.gen")}


def probe_name(value: Any, field: str) -> str:
    """A same-host probe file name, ``gml-probe-<16 hex>`` (``comm.shmpath.make_probe``)."""
    if not isinstance(value, str) or _PROBE_NAME.fullmatch(value) is None:
        raise _fail(field, "a probe name gml-probe-<16 hex digits>", value)
    return value


def probe_answer(value: Any, field: str) -> bytes:
    """The nonce read back from a probe file: exactly 16 bytes."""
    if not isinstance(value, bytes) or len(value) != 16:
        raise _fail(field, "16 bytes", value)
    return value


_MODEL: dict[str, Check] = {
    "num_samples": count(MAX_NUM_SAMPLES),  # the sender's local data size (merge weights)
    "pulled": flag,                         # an answer to a pull
    "seq": count(MAX_SEQ),                  # the sender's stream sequence number (peer.stream)
    "keyframe": flag,                       # a CHOCO keyframe: x_hat itself
    "refresh": flag,                        # a CHOCO delta through the dense refresh codec
}
#: Kind -> info key -> check (returns the normalised value, raises SchemaError).
SCHEMAS: Mapping[str, Mapping[str, Check]] = {
    "model": _MODEL,
    "delta": _MODEL,
    "heartbeat": {"done": flag, "hears": peer_ids, "address": address},
    "pull": {},
    "view": {"entries": view_entries, "reply": flag, "address": address,
             "nonce": count(MAX_SEQ), "echo": count(MAX_SEQ)},  # membership probes (peer/swarm)
    "ack": {"shm_release": shm_token, "done": flag,
            "shm_probe": probe_name, "shm_probe_answer": probe_answer},  # same-host handshake
    "hello": {"heard_all": flag, "x_sq_norm": real(0.0)},          # featuresplit handshake
    "partial": {"w_sq": real(0.0), "g_sq": real(0.0, allow_inf=True), "dot": real()},
}


def check_info(kind: str, info: Any) -> dict[str, Any]:
    """``info`` checked against ``kind``'s schema: a new dict of normalised values; SchemaError
    naming the first bad or unknown field."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise SchemaError(f"kind {kind!r:.40} has no info schema; known: {sorted(SCHEMAS)}")
    if not isinstance(info, Mapping):
        raise SchemaError(f"info must be a map, got {type(info).__name__}")
    if len(info) > MAX_INFO_KEYS:
        raise SchemaError(f"info has {len(info)} keys, more than {MAX_INFO_KEYS}")
    out: dict[str, Any] = {}
    for key, value in info.items():
        check = schema.get(key) if isinstance(key, str) else None
        if check is None:
            raise SchemaError(f"info.{key!r:.40} is not a field of {kind!r} messages; "
                            f"allowed: {sorted(schema)}")
        out[key] = check(value, key)
    return out


_SCALARS = (type(None), bool, int, float, str, bytes)


def _meta_scalar(x: Any, what: str) -> Any:
    if isinstance(x, (str, bytes)) and len(x) > MAX_META_CHARS:
        raise SchemaError(f"{what} is longer than {MAX_META_CHARS}")
    if not isinstance(x, _SCALARS):
        raise SchemaError(f"{what} holds a {type(x).__name__}; meta values are msgpack scalars "
                          f"or flat lists of at most {MAX_META_LIST} of them")
    return x


def check_meta(meta: Any) -> tuple[dict[str, Any], int]:
    """A codec's meta: at most MAX_META_KEYS str keys -> a scalar or a flat list of at most
    MAX_META_LIST scalars. Returns (a copy, its msgpack object count); SchemaError otherwise."""
    if not isinstance(meta, Mapping) or len(meta) > MAX_META_KEYS:
        raise SchemaError(f"meta must be a map of at most {MAX_META_KEYS} keys, got {meta!r:.60}")
    out, objects = {}, 1 + 2 * len(meta)
    for k, v in meta.items():
        if not isinstance(k, str) or not 0 < len(k) <= MAX_META_CHARS:
            raise SchemaError(f"meta keys must be str of 1..{MAX_META_CHARS} chars, got {k!r:.40}")
        if isinstance(v, (list, tuple)):
            if len(v) > MAX_META_LIST:
                raise SchemaError(f"meta[{k!r:.40}] is a list of more than {MAX_META_LIST}")
            out[k] = [_meta_scalar(x, f"meta[{k!r:.40}][{i}]") for i, x in enumerate(v)]
            objects += len(v)
        else:
            out[k] = _meta_scalar(v, f"meta[{k!r:.40}]")
    return out, objects
