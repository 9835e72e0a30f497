"""Wire format v1: round trips over dtypes/shapes/kinds/info, zero copies both ways, and every
corruption of a valid message refused with a WireError and a reason (never another exception)."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipml.codecs.base import Payload
from gossipml.schema import SCHEMAS, check_info
from gossipml.wire import (DTYPE_ITEMSIZE, KINDS, MAX_HEADER_BYTES, MAX_RANK, MAX_TENSORS, REASONS,
                           WIRE_VERSION, Message, WireError, dtype_itemsize, message_nbytes, pack,
                           unpack)

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False), st.text(max_size=12), st.binary(max_size=12))
values = st.recursive(scalars, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)), max_leaves=8)


def _nest(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(inner, st.lists(inner, max_size=3),
                     st.dictionaries(st.text(max_size=6), inner, max_size=3))


# a codec meta: str keys -> scalars or flat lists of scalars
str_maps = st.dictionaries(st.text(min_size=1, max_size=8),
                           st.one_of(scalars, st.lists(scalars, max_size=4)), max_size=4)
#: One good info map per kind (tests/unit/test_schema.py checks every field in depth).
GOOD_INFO = {
    "model": [{}, {"num_samples": 10}, {"num_samples": 0, "pulled": True, "seq": 3}],
    "delta": [{"num_samples": 5, "seq": 0, "keyframe": True}, {"seq": 9, "refresh": True}],
    "heartbeat": [{"done": False, "hears": [0, 2]},
                  {"done": True, "hears": [], "address": "tcp://127.0.0.1:5555"}],
    "pull": [{}],
    "view": [{"entries": [[1, "tcp://h:1", 0.5]], "reply": False, "address": "ipc:///tmp/x"}],
    "ack": [{"shm_release": {"name": "gml-1-2-0123abcd", "gen": 4}}, {"done": True}],
    "hello": [{"heard_all": False, "x_sq_norm": 2.5}],
    "partial": [{"w_sq": 1.0, "g_sq": float("inf"), "dot": -0.5}, {}],
}
names = st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=20)


@st.composite
def payloads(draw) -> Payload:
    """A payload of an allowed dtype and shape (empty included) with 0-3 raw buffers."""
    dtype = draw(st.sampled_from(sorted(DTYPE_ITEMSIZE)))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_buf = draw(st.integers(0, 3))
    numel = int(np.prod(shape)) if shape else 1
    sizes = [numel * DTYPE_ITEMSIZE[dtype]] + [int(rng.integers(0, 40)) for _ in range(n_buf - 1)]
    bufs = tuple(rng.integers(0, 256, size=n, dtype=np.uint8) for n in sizes[:n_buf])
    codec = draw(st.sampled_from(["identity", "q8", "topk+ef", "lowrank"]))
    return Payload(codec, dtype, shape, draw(str_maps), bufs)


@st.composite
def messages(draw) -> Message:
    """Any valid message: kind, ids, distinct tensor names, an info map."""
    tensor_names = draw(st.lists(names, max_size=4, unique=True))
    tensors = tuple((n, draw(payloads())) for n in tensor_names)
    kind = draw(st.sampled_from(sorted(KINDS)))
    return Message(kind, draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**62 - 1)),
                   tensors, draw(st.sampled_from(GOOD_INFO[kind])))


def assert_same(got: Message, want: Message) -> None:
    """Field-by-field equality, buffers compared by their bytes."""
    assert (got.kind, got.sender, got.round) == (want.kind, want.sender, want.round)
    assert got.info == check_info(want.kind, want.info)  # normalised
    assert [n for n, _ in got.tensors] == [n for n, _ in want.tensors]
    for (_, p), (_, q) in zip(got.tensors, want.tensors):
        assert (p.codec, p.dtype, p.shape, p.meta) == (q.codec, q.dtype, q.shape, q.meta)
        assert [bytes(b) for b in p.buffers] == [bytes(memoryview(b)) for b in q.buffers]


def refused(frames, reason: str | None = None, **kw) -> WireError:
    """unpack must raise WireError (with ``reason`` when given) and nothing else."""
    with pytest.raises(WireError) as info:
        unpack(frames, **kw)
    assert info.value.reason in REASONS, info.value.reason
    if reason is not None:
        assert info.value.reason == reason, str(info.value)
    return info.value


def model_frames() -> list[bytes]:
    """A valid two-tensor message as received bytes."""
    w = np.arange(12, dtype=np.float32).view(np.uint8)
    b = np.ones(3, dtype=np.float64).view(np.uint8)
    msg = Message("model", 1, 4, (("w", Payload("identity", "float32", (3, 4), {}, (w,))),
                                  ("b", Payload("identity", "float64", (3,), {}, (b,)))),
                  {"num_samples": 10})
    return [bytes(memoryview(f)) for f in pack(msg)]


def with_header(frames: list[bytes], **changes) -> list[bytes]:
    """The same data frames under a header with fields changed (None removes a field)."""
    h = msgpack.unpackb(frames[0], raw=False)
    for k, v in changes.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    return [msgpack.packb(h, use_bin_type=True)] + frames[1:]


# ---- round trips and copies ------------------------------------------------------------------
@SETTINGS
@given(messages())
def test_round_trip(msg):
    frames = pack(msg)
    assert len(frames) == 1 + sum(len(p.buffers) for _, p in msg.tensors)
    assert message_nbytes(frames) == len(frames[0]) + sum(p.nbytes for _, p in msg.tensors)
    assert_same(unpack(frames), msg)
    received = [bytes(memoryview(f)) for f in frames]
    assert_same(unpack(received, max_message_bytes=message_nbytes(received)), msg)


@SETTINGS
@given(messages())
def test_round_trip_with_expected(msg):
    expected = {n: (p.dtype, p.shape) for n, p in msg.tensors}
    assert_same(unpack(pack(msg), expected=expected), msg)


def test_pack_and_unpack_do_not_copy():
    w = np.arange(1000, dtype=np.float32)
    frames = pack(Message("model", 0, 0, (("w", Payload("identity", "float32", (1000,), {},
                                                         (w.view(np.uint8),))),)))
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), w)
    received = [bytearray(memoryview(f)) for f in frames]  # what a socket hands over
    msg = unpack(received)
    buf = msg.tensors[0][1].buffers[0]
    assert isinstance(buf, memoryview)
    assert np.shares_memory(np.frombuffer(buf, np.uint8), np.frombuffer(received[1], np.uint8))
    received[1][:4] = b"\xff\xff\xff\xff"  # a write to the frame shows through the payload
    assert bytes(buf[:4]) == b"\xff\xff\xff\xff"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64,
                                   torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64,
                                   torch.bool])
def test_torch_tensors_through_identity_codec(dtype):
    from gossipml.codecs import build_codec, decode_model, encode_model

    gen = torch.Generator().manual_seed(0)
    model = {"a": (torch.randn(3, 5, generator=gen) * 10).to(dtype),
             "empty": torch.zeros(0, 4, dtype=dtype)}
    items, _ = encode_model(model, build_codec("identity"), None)
    frames = [bytes(memoryview(f)) for f in pack(Message("model", 2, 9, tuple(items)))]
    msg = unpack(frames, expected={k: (str(v.dtype)[6:], tuple(v.shape)) for k, v in model.items()})
    out = decode_model(msg.tensors)
    for k, v in model.items():
        assert out[k].dtype == dtype and torch.equal(out[k], v)


def test_dtype_itemsize():
    assert [dtype_itemsize(n) for n in ("bfloat16", "float32", "int64", "bool")] == [2, 4, 8, 1]
    with pytest.raises(WireError) as e:
        dtype_itemsize("complex64")
    assert e.value.reason == "bad_field" and "complex64" in str(e.value)


# ---- corruption --------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=64), st.none(), st.integers(), st.text(max_size=5)),
                max_size=5))
def test_arbitrary_frames_only_raise_wire_error(frames):
    try:
        unpack(frames, max_message_bytes=1 << 20)
    except WireError as exc:
        assert exc.reason in REASONS


@SETTINGS
@given(values, st.lists(st.binary(max_size=16), max_size=3))
def test_arbitrary_msgpack_headers_only_raise_wire_error(header, data):
    try:
        unpack([msgpack.packb(header, use_bin_type=True), *data])
    except WireError as exc:
        assert exc.reason in REASONS


@SETTINGS
@given(st.sampled_from(["v", "kind", "sender", "round", "info", "tensors"]), values)
def test_any_field_replaced_by_any_value(key, value):
    frames = with_header(model_frames(), **{key: value})
    try:
        msg = unpack(frames)
    except WireError as exc:
        assert exc.reason in REASONS
    else:  # accepted only when the replacement is itself valid
        assert msg.kind in KINDS and isinstance(msg.info, dict)


@SETTINGS
@given(st.data())
def test_flipped_header_bytes_are_checked_or_refused(data):
    frames = model_frames()
    head = bytearray(frames[0])
    for _ in range(data.draw(st.integers(1, 3))):
        head[data.draw(st.integers(0, len(head) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        msg = unpack([bytes(head), *frames[1:]])
    except WireError as exc:
        assert exc.reason in REASONS
    else:
        for (_, p), f in zip(msg.tensors, frames[1:]):
            assert p.dtype in DTYPE_ITEMSIZE and len(p.buffers[0]) == len(f)


def test_truncated_header_is_not_msgpack():
    frames = model_frames()
    for cut in range(len(frames[0])):
        refused([frames[0][:cut], *frames[1:]], "not_msgpack")


def test_data_frame_size_and_count_must_match_the_header():
    frames = model_frames()
    refused([frames[0], frames[1][:-1], frames[2]], "truncated")
    refused([frames[0], frames[1], frames[2] + b"\0"], "overlong")
    refused(frames[:2], "frame_count")
    refused([*frames, b"extra"], "frame_count")
    refused([frames[0], frames[2], frames[1]], "truncated")  # w wants 48 bytes, gets b's 24
    refused([], "frame_count")
    refused("not a list", "frame_count")
    refused([frames[0], None, frames[2]], "not_buffer")


def test_header_field_checks():
    f = model_frames()
    h = msgpack.unpackb(f[0], raw=False)
    t0 = h["tensors"][0]
    cases = {
        "bad_version": [dict(v=2), dict(v="1"), dict(v=True)],
        "missing_field": [dict(v=None), dict(kind=None), dict(tensors=None)],
        "bad_kind": [dict(kind="gossip"), dict(kind=3)],
        "unknown_field": [dict(extra=1)],
        "bad_info": [dict(info=[1]), dict(info={1: 2}), dict(info={"x": [[[[[1]]]]]}),
                     dict(info={"num_samples": "x"}), dict(info={"num_samples": 2**62})],
        "bad_field": [dict(sender=-1), dict(sender=True), dict(sender=2**31), dict(round=1.0),
                      dict(tensors={}),
                      dict(tensors=[t0[:5]] + h["tensors"][1:]),
                      dict(tensors=[[t0[0], "complex64", *t0[2:]]] + h["tensors"][1:]),
                      dict(tensors=[[t0[0], t0[1], [1] * (MAX_RANK + 1), *t0[3:]]]),
                      dict(tensors=[[t0[0], t0[1], [-3, 4], *t0[3:]]]),
                      dict(tensors=[["", *t0[1:]]]), dict(tensors=[[*t0[:5], [-1]]]),
                      dict(tensors=[[*t0[:4], {"x": [[1]]}, t0[5]]]),
                      dict(tensors=[[*t0[:4], {"x": [0] * 33}, t0[5]]]),
                      dict(tensors=[[*t0[:4], {str(i): 0 for i in range(33)}, t0[5]]])],
        "duplicate_tensor": [dict(tensors=[t0, t0])],
    }
    for reason, changes in cases.items():
        for change in changes:
            err = refused(with_header(f, **change), reason)
            assert str(err).startswith(reason)


def test_non_map_header_and_ext_types():
    refused([msgpack.packb([1, 2])], "bad_header")
    refused([msgpack.packb(msgpack.ExtType(3, b"xx"))], "not_msgpack")
    refused([msgpack.packb({"v": 1}) + b"\x00"], "not_msgpack")  # trailing data


def test_size_limits():
    f = model_frames()
    refused(f, "too_large", max_message_bytes=message_nbytes(f) - 1)
    unpack(f, max_message_bytes=message_nbytes(f))
    refused([b"\x00" * (MAX_HEADER_BYTES + 1)], "too_large")  # refused before decoding
    refused([f[0]] + [b"\0" * 4096] * 5, "too_large", max_message_bytes=8192)


def test_expected_names_dtypes_and_shapes():
    f = model_frames()
    good = {"w": ("float32", (3, 4)), "b": ("float64", (3,))}
    assert [n for n, _ in unpack(f, expected=good).tensors] == ["w", "b"]
    refused(f, "wrong_shape", expected=dict(good, w=("float32", (4, 3))))
    refused(f, "wrong_dtype", expected=dict(good, b=("float32", (3,))))
    refused(f, "unknown_tensor", expected={"w": good["w"]})
    unpack(f, expected=dict(good, c=("float32", (1,))))  # missing tensors are the caller's call


def test_pack_refuses_what_unpack_would():
    p = Payload("identity", "float32", (1,), {}, (np.zeros(4, np.uint8),))
    for msg, reason in [
        (Message("nope", 0, 0), "bad_kind"),
        (Message("model", -1, 0), "bad_field"),
        (Message("model", 0, 0, (("w", p), ("w", p))), "duplicate_tensor"),
        (Message("model", 0, 0, (("w", Payload("identity", "complex64", (1,))),)), "bad_field"),
        (Message("model", 0, 0, info={"x": object()}), "bad_info"),
        (Message("model", 0, 0, info={"num_samples": 2**70}), "bad_info"),
        (Message("heartbeat", 0, 0, info={"hears": 3}), "bad_info"),
        (Message("release", 0, 0), "bad_kind"),  # a shm release is an ack with shm_release
        (Message("model", 0, 0, (("w", Payload("identity", "float32", (2,), {},
                                                 (np.zeros((4, 4), np.uint8)[:, 0],))),)),
         "bad_field"),  # a strided buffer
    ]:
        with pytest.raises(WireError) as e:
            pack(msg)
        assert e.value.reason == reason, (msg, e.value)


def test_reasons_list_is_complete():
    source = (ROOT / "gossipml/wire.py").read_text()
    literal = set(re.findall(r'WireError\(\s*"(\w+)"', source))
    literal |= set(re.findall(r'"(\w+)" if ', source))
    assert literal and literal <= REASONS, literal - REASONS


def test_docs_name_every_reason_and_the_version():
    doc = (ROOT / "docs/wire.md").read_text()
    missing = [r for r in sorted(REASONS) if f"`{r}`" not in doc]
    assert not missing, f"docs/wire.md does not document {missing}"
    assert f"version {WIRE_VERSION}" in doc.lower() or f"v{WIRE_VERSION}" in doc


def _hostile_headers() -> dict[str, bytes]:
    """~4 MiB headers of empty lists (1 byte each, ~64 bytes as Python lists) in every place."""
    n = (MAX_HEADER_BYTES - 256) // 60010

    def head(**kw) -> dict:
        return {"v": 1, "kind": "model", "sender": 1, "round": 0, "info": {}, "tensors": [], **kw}

    return {
        "info": msgpack.packb(head(info={f"k{i}": [[]] * 60000 for i in range(n)})),
        "meta": msgpack.packb(head(tensors=[[str(i), "float32", [1], "identity",
                                             {"m": [[]] * 60000}, [4]] for i in range(n)])),
        "unknown key": msgpack.packb({**head(), "x": [[[]] * 60000] * n}),
        "not a map": msgpack.packb([[[]] * 60000] * n),
        "many entries": msgpack.packb(head(tensors=[[str(i), "bool", [], "q", {}, []]
                                                    for i in range(MAX_TENSORS + 1)])),
    }


def test_hostile_headers_cost_little_memory():
    """Before the bounded decoding each of these peaked at ~256 MiB of Python objects (and the
    info one was accepted); now each is refused at a few MiB (docs/wire.md, 'Memory')."""
    import tracemalloc

    for where, frame in _hostile_headers().items():
        assert len(frame) > 100_000
        tracemalloc.start()
        try:
            refused([frame])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 * 2**20, (where, peak)


def test_kinds_are_the_schema_kinds():
    assert KINDS == set(SCHEMAS) and "release" not in KINDS
