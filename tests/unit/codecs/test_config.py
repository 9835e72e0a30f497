"""CodecConfig from spec strings and TOML tables; the registry; errors that list what is allowed."""

from __future__ import annotations

import pytest
import torch

from gossipml.codecs import (BySize, CodecConfig, ErrorFeedback, QuantCodec, Registry,
                             TopKCodec, build_codec, parse_spec)


@pytest.mark.parametrize("spec", ["q8", "q4:block=256+ef", "topk:0.01+ef", "lowrank:2+ef",
                                  "topk:0.01>q8+ef", "sign+ef+bysize:1024", "randk:100",
                                  "threshold:0.5", "q2:stochastic=true:seed=3", "fp16+delta"])
def test_specs_build_and_roundtrip_through_config(spec):
    cfg = CodecConfig(spec=spec)
    assert CodecConfig(spec=cfg.spec) == cfg
    codec = build_codec(cfg)
    payload, _ = codec.encode(torch.randn(40, 30), None)
    assert payload.nbytes > 0


def test_spec_structure():
    codec = build_codec("topk:0.01>q8:block=64+ef+bysize:4096:fp16")
    assert isinstance(codec, ErrorFeedback) and isinstance(codec.inner, BySize)
    top = codec.inner.large
    assert isinstance(top, TopKCodec) and top.fraction == 0.01
    assert isinstance(top.value_codec, QuantCodec) and top.value_codec.block == 64
    assert codec.inner.pick(10).name == "fp16"
    assert parse_spec("randk:100")["stages"][0][1] == {"count": 100}
    assert CodecConfig(spec="q8+delta").content == "delta"


def test_table_form_matches_spec():
    table = CodecConfig.from_table({"name": "topk", "fraction": 0.01, "error_feedback": True})
    assert table.spec == "topk:fraction=0.01+ef" and table.error_feedback
    chained = CodecConfig(name="topk", fraction=0.01, values="q8", content="delta")
    assert chained.spec == "topk:fraction=0.01>q8+delta" and chained.content == "delta"
    assert CodecConfig().spec == "identity"


@pytest.mark.parametrize("bad, words", [
    ("zstd", "allowed"), ("q8:bits=3", "allowed"), ("topk:2.5", "fraction"),
    ("q8>q4", "chaining"), ("topk:0.1>topk", "value codec"), ("q8+nope", "ef, "), ("", "spec"),
    ("topk:0", "fraction"), ("q8+ef+delta", "double-counts"),
])
def test_bad_specs_say_what_is_allowed(bad, words):
    with pytest.raises(ValueError, match=words):
        CodecConfig(spec=bad)


def test_bad_tables_say_what_is_allowed():
    with pytest.raises(ValueError, match="takes"):
        CodecConfig(name="q8", fraction=0.1)
    with pytest.raises(ValueError, match="allowed"):
        CodecConfig.from_table({"name": "q8", "colour": 1})
    with pytest.raises(ValueError, match="content"):
        CodecConfig(content="gradients")


def test_registry_rejects_duplicates():
    reg = Registry()
    reg.add("q8", QuantCodec(8))
    with pytest.raises(ValueError, match="already registered"):
        reg.add("q8", QuantCodec(8))
