"""Malformed payloads: every corruption raises CodecError (never another exception)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipml.codecs import CodecError, Payload, build_codec, decode_payload, default_registry

SPECS = ["identity", "fp16", "bf16", "q8", "q4:block=5", "q2:block=3", "sign", "sign:block=4",
         "topk:0.3", "randk:0.3", "threshold:0.1", "lowrank:1:min_gain=0.1", "topk:0.3>q8",
         "randk:0.5>fp16"]

_junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40),
                  st.floats(allow_nan=True), st.text(max_size=8),
                  st.lists(st.integers(-3, 3), max_size=3), st.sampled_from(["raw", "q8", "topk"]))


def _valid(spec: str, seed: int) -> Payload:
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(seed))
    return build_codec(spec).encode(x, None)[0]


@st.composite
def corrupted(draw):
    payload = _valid(draw(st.sampled_from(SPECS)), draw(st.integers(0, 1000)))
    kind = draw(st.sampled_from(["truncate", "extend", "drop", "add", "shape", "dtype", "meta",
                                 "del_meta", "codec"]))
    bufs = [bytes(memoryview(b).cast("B")) for b in payload.buffers]
    if kind in ("truncate", "extend") and bufs:
        i = draw(st.integers(0, len(bufs) - 1))
        cut = draw(st.integers(1, 16))
        bufs[i] = bufs[i][:-cut] if kind == "truncate" else bufs[i] + b"\0" * cut
    elif kind == "drop" and bufs:
        bufs.pop(draw(st.integers(0, len(bufs) - 1)))
    elif kind == "add":
        bufs.append(draw(st.binary(max_size=16)))
    elif kind == "shape":
        shape = tuple(draw(st.lists(st.integers(-2, 50), max_size=4)))
        return dataclasses.replace(payload, shape=shape, buffers=tuple(bufs))
    elif kind == "dtype":
        return dataclasses.replace(payload, dtype=draw(st.sampled_from(
            ["int64", "uint8", "bool", "float64", "complex64", "x", ""])), buffers=tuple(bufs))
    elif kind in ("meta", "del_meta") and payload.meta:
        meta = dict(payload.meta)
        key = draw(st.sampled_from(sorted(meta)))
        if kind == "meta":
            meta[key] = draw(_junk)
        else:
            del meta[key]
        return dataclasses.replace(payload, meta=meta, buffers=tuple(bufs))
    elif kind == "codec":
        return dataclasses.replace(payload, codec=draw(st.sampled_from(
            default_registry().names() + ["nope", ""])), buffers=tuple(bufs))
    return dataclasses.replace(payload, buffers=tuple(bufs))


@settings(max_examples=300, deadline=None)
@given(corrupted())
def test_corrupted_payload_raises_codec_error_or_decodes_consistently(payload):
    codec = default_registry().get(payload.codec) if payload.codec in default_registry().names() \
        else None
    for decode in ([codec.decode] if codec else []) + [decode_payload]:
        try:
            out = decode(payload)
        except CodecError:
            continue
        assert isinstance(out, torch.Tensor)  # a corruption that stays self-consistent
        assert tuple(out.shape) == tuple(payload.shape)


@pytest.mark.parametrize("spec", SPECS)
def test_truncated_buffers_are_rejected(spec):
    payload = _valid(spec, 0)
    for i, buf in enumerate(payload.buffers):
        if memoryview(buf).nbytes == 0:
            continue
        bufs = list(payload.buffers)
        bufs[i] = bytes(memoryview(buf).cast("B"))[:-1]
        with pytest.raises(CodecError):
            decode_payload(dataclasses.replace(payload, buffers=tuple(bufs)))


def test_unknown_codec_and_non_payload_are_rejected():
    with pytest.raises(CodecError, match="unknown codec"):
        decode_payload(Payload("zstd", "float32", (1,), {}, (b"\0" * 4,)))
    with pytest.raises(CodecError):
        decode_payload("not a payload")  # type: ignore[arg-type]


def test_decoding_read_only_buffers_does_not_alias_them():
    payload = _valid("identity", 3)
    frozen = dataclasses.replace(payload, buffers=tuple(memoryview(bytes(b)) for b in
                                                        payload.buffers))
    out = decode_payload(frozen)
    out += 1  # writable, separate memory
    assert not torch.equal(out, decode_payload(frozen))
