"""CodecConfig from spec strings and TOML tables; the registry; errors that list what is allowed."""

from __future__ import annotations

import pytest
import torch

from gossipml.codecs import (BySize, CodecConfig, ErrorFeedback, QuantCodec, Registry,
                             TopKCodec, build_codec, parse_spec)
from gossipml.codecs.config import params_content_problem


@pytest.mark.parametrize("spec", ["q8", "q4:block=256+ef", "topk:0.01+ef", "lowrank:2+ef",
                                  "topk:0.01>q8+ef", "sign+ef+bysize:1024", "randk:100",
                                  "threshold:0.5", "q2:stochastic=true:seed=3", "fp16+delta"])
def test_specs_build_and_roundtrip_through_config(spec):
    cfg = CodecConfig(spec=spec, allow_biased_params=True)  # sparse/low-rank/sign need the key
    assert CodecConfig(spec=cfg.spec, allow_biased_params=True) == cfg
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
    table = CodecConfig.from_table({"name": "topk", "fraction": 0.01, "error_feedback": True,
                                    "allow_biased_params": True})
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


@pytest.mark.parametrize("spec, words", [
    ("topk:0.01+ef", "averages? zeros.*12 points below dense"),
    ("topk:0.01>q8+ef", r'spec "topk:fraction=0.01>q8\+delta"'),
    ("randk:0.1", "zeros into the rest"),
    ("lowrank:2+ef+bysize:1024", "58 points below dense"),
    ("sign+ef", r"'sign\+delta' 0.5"),
    ("q2", "4 levels per block"),
    ("q2:block=64+ef", r'spec "q2:block=64\+delta"'),
])
def test_sparse_lowrank_and_sign_over_parameters_are_refused(spec, words):
    with pytest.raises(ValueError, match=words) as refused:
        CodecConfig(spec=spec)
    assert 'content = "delta"' in str(refused.value)
    assert "allow_biased_params = true" in str(refused.value)
    # the same codec over changes (CHOCO) is fine, and so is the explicit key over parameters
    assert CodecConfig(spec=spec.replace("+ef", ""), content="delta").content == "delta"
    assert CodecConfig(spec=spec, allow_biased_params=True).content == "params"


@pytest.mark.parametrize("spec", ["identity", "fp16", "bf16+ef", "q8", "q8+ef", "q4",
                                  "q4:block=256:stochastic=true+ef"])
def test_dense_and_quantizing_codecs_over_parameters_are_accepted(spec):
    assert params_content_problem(parse_spec(spec)) is None
    assert CodecConfig(spec=spec).content == "params"


def test_the_refusal_reaches_experiment_files_and_bare_codecs_are_not_checked():
    from gossipml.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError, match=r"^\[codec\] codec 'topk' over content"):
        ExperimentConfig.from_dict({"codec": {"spec": "topk:0.05+ef"}})
    with pytest.raises(ValueError, match="allow_biased_params must be true or false"):
        CodecConfig(spec="topk:0.05", allow_biased_params="yes")
    # build_codec of a bare spec builds a codec: what it carries is the caller's concern
    assert isinstance(build_codec("topk:0.05"), TopKCodec)
