"""The codec registry is the one list of codec names: the spec parser, the table form, the decoder
lookup and the nested value-codec check all read it, and a codec registered from outside works in
all of them."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gossipml.codecs._util import (dtype_name, expect_buffers, header, meta_float, to_buffer,
                                   view_buffer)
from gossipml.codecs import (CodecConfig, CodecError, Payload, build_codec, decode_payload,
                             default_registry, register_codec)
from gossipml.codecs.registry import CodecEntry, codec_entry

BUILTINS = ["bf16", "fp16", "identity", "lowrank", "q2", "q4", "q8", "randk", "sign",
            "threshold", "topk"]


class NegateCodec:
    """A toy value codec: sends ``-x * scale`` raw, decodes ``-y / scale`` (exact for scale=1).
    It stays registered for the rest of the test process, so it checks payloads like any codec."""

    name = "test_negate"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        out = -tensor.detach() * self.scale
        return Payload(self.name, dtype_name(tensor.dtype), tuple(tensor.shape),
                       {"scale": self.scale}, (to_buffer(out),)), state

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        dtype, shape, numel = header(payload)
        scale = meta_float(payload.meta, "scale")
        if not dtype.is_floating_point or scale == 0:
            raise CodecError(f"test_negate needs a float tensor and scale != 0, got {dtype}")
        (buf,) = expect_buffers(payload, 1)
        flat = view_buffer(buf, dtype, numel, "test_negate")
        return (-flat / scale).reshape(shape).to(device)


if NegateCodec.name not in default_registry():  # the registry is process-wide
    register_codec(NegateCodec.name, lambda params, values: NegateCodec(
        float(params.get("scale", 1.0))), keys=("scale",), positional="scale")


def test_builtins_are_registered_with_their_roles():
    reg = default_registry()
    assert set(BUILTINS) <= set(reg.names())
    assert set(reg.names("select")) >= {"topk", "randk", "threshold"}
    assert "lowrank" in reg.names("matrix") and "q8" in reg.names("value")


@pytest.mark.parametrize("name", BUILTINS)
def test_every_registered_name_builds_and_decodes_its_own_payload(name):
    codec = build_codec(name)
    x = torch.randn(24, 20, generator=torch.Generator().manual_seed(1))
    payload, _ = codec.encode(x, None)
    assert payload.codec in default_registry()
    assert decode_payload(payload).shape == x.shape


def test_a_registered_codec_works_in_specs_chains_and_decoding():
    x = torch.randn(30, 10, generator=torch.Generator().manual_seed(2))
    payload, _ = build_codec("test_negate:2.0+ef").encode(x, None)
    assert payload.codec == "test_negate" and payload.meta["scale"] == 2.0
    torch.testing.assert_close(decode_payload(payload), x)
    chained, _ = build_codec("topk:count=5>test_negate").encode(x, None)
    assert chained.meta["values"] == "test_negate"
    decoded = decode_payload(chained)
    assert int((decoded != 0).sum()) == 5 and torch.equal(decoded[decoded != 0],
                                                           x[decoded != 0])
    assert CodecConfig(name="q8", min_numel=100, small="test_negate").spec.endswith(
        "+bysize:100:test_negate")


def test_duplicate_names_and_bad_entries_raise():
    with pytest.raises(ValueError, match="already registered"):
        register_codec("q8", lambda params, values: NegateCodec())
    with pytest.raises(ValueError, match="role"):
        CodecEntry("x1", lambda params, values: NegateCodec(), role="dense-ish")
    with pytest.raises(ValueError, match="without"):
        CodecEntry("a>b", lambda params, values: NegateCodec())
    with pytest.raises(ValueError, match="positional"):
        CodecEntry("x2", lambda params, values: NegateCodec(), keys=("a",), positional="b")


def test_roles_decide_what_may_chain():
    with pytest.raises(ValueError, match="chaining"):
        build_codec("test_negate>q8")
    with pytest.raises(ValueError, match="value codec"):
        build_codec("topk:0.1>lowrank")
    with pytest.raises(ValueError, match="small codec"):
        build_codec("q8+bysize:10:randk")
    with pytest.raises(ValueError, match="fallback 'nope'"):
        build_codec("lowrank:2:fallback=nope")


def test_nested_value_codec_must_be_a_registered_value_codec():
    x = torch.randn(50)
    payload, _ = build_codec("topk:count=4>q8").encode(x, None)
    for bad in ("lowrank", "randk", "not_a_codec", ["q8"]):
        forged = Payload(payload.codec, payload.dtype, payload.shape,
                         {**payload.meta, "values": bad}, payload.buffers)
        with pytest.raises(CodecError, match="values"):
            decode_payload(forged)


def test_unknown_names_list_the_registry():
    with pytest.raises(ValueError, match="test_negate"):
        CodecConfig(spec="zstd")
    with pytest.raises(CodecError, match="unknown codec"):
        decode_payload(Payload("zstd", "float32", (1,), {}, (b"\0" * 4,)))
    assert codec_entry("topk").count_key == "count"
