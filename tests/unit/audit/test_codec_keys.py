"""Each ``[codec]`` key changes what the codec the peer builds puts on the wire (two values,
two payloads), so a key that is parsed and then dropped fails here."""

from __future__ import annotations

import pytest
import torch

from gossipml.codecs import CodecConfig, build_codec

X = torch.randn(64, generator=torch.Generator().manual_seed(0))
M = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))


def _differ(wire_bytes, a: dict, b: dict, x: torch.Tensor = X) -> None:
    """The codecs of tables ``a`` and ``b`` put different bytes on the wire for ``x``."""
    one = wire_bytes(build_codec(CodecConfig(**a, allow_biased_params=True)), x)
    two = wire_bytes(build_codec(CodecConfig(**b, allow_biased_params=True)), x)
    assert one != two, f"[codec] {a} and {b} encode the same bytes: a key is ignored"


def test_spec_chooses_the_codec(wire_bytes):
    _differ(wire_bytes, {"spec": "q8"}, {"spec": "fp16"})


def test_name_chooses_the_codec(wire_bytes):
    _differ(wire_bytes, {"name": "q8"}, {"name": "q4"})


def test_block_sets_the_quantization_blocks(wire_bytes):
    _differ(wire_bytes, {"name": "q4", "block": 8}, {"name": "q4", "block": 64})


def test_stochastic_rounds_at_random(wire_bytes):
    _differ(wire_bytes, {"name": "q2", "stochastic": False}, {"name": "q2", "stochastic": True})


def test_seed_draws_other_coordinates(wire_bytes):
    _differ(wire_bytes, {"name": "randk", "fraction": 0.1, "seed": 1},
            {"name": "randk", "fraction": 0.1, "seed": 2})


def test_fraction_sets_how_many_are_sent(wire_bytes):
    _differ(wire_bytes, {"name": "topk", "fraction": 0.1}, {"name": "topk", "fraction": 0.5})


def test_count_sets_how_many_are_sent(wire_bytes):
    _differ(wire_bytes, {"name": "topk", "count": 3}, {"name": "topk", "count": 10})


def test_threshold_sets_which_are_sent(wire_bytes):
    _differ(wire_bytes, {"name": "threshold", "threshold": 0.5},
            {"name": "threshold", "threshold": 1.5})


def test_rank_sets_the_factor_width(wire_bytes):
    _differ(wire_bytes, {"name": "lowrank", "rank": 1}, {"name": "lowrank", "rank": 2}, M)


def test_fallback_encodes_what_lowrank_cannot(wire_bytes):
    _differ(wire_bytes, {"name": "lowrank", "fallback": "identity"},
            {"name": "lowrank", "fallback": "fp16"})  # a vector: the fallback carries it


def test_min_gain_decides_between_factors_and_fallback(wire_bytes):
    # 16 x 16 at rank 2: factors are 4x smaller, so gain 2 factors it and gain 8 does not
    _differ(wire_bytes, {"name": "lowrank", "rank": 2, "min_gain": 2.0},
            {"name": "lowrank", "rank": 2, "min_gain": 8.0}, M)


def test_values_encodes_the_chosen_entries(wire_bytes):
    _differ(wire_bytes, {"name": "topk", "fraction": 0.5}, {"name": "topk", "fraction": 0.5,
                                                             "values": "q8"})


def test_error_feedback_carries_the_residual_into_the_next_message():
    sent = {}
    for ef in (False, True):
        codec, state = build_codec(CodecConfig(name="topk", fraction=0.25, error_feedback=ef,
                                               allow_biased_params=True)), None
        payloads = []
        for _ in range(2):
            payload, state = codec.encode(X, state)
            payloads.append(b"".join(bytes(memoryview(b).cast("B")) for b in payload.buffers))
        sent[ef] = payloads
    assert sent[False][0] == sent[True][0] and sent[False][1] != sent[True][1]


@pytest.mark.parametrize("min_numel", [10, 1000])
def test_min_numel_sends_small_tensors_with_the_small_codec(wire_bytes, min_numel):
    plain = wire_bytes(build_codec(CodecConfig(name="q8")), X)
    by_size = wire_bytes(build_codec(CodecConfig(name="q8", min_numel=min_numel,
                                                 small="identity")), X)
    assert (by_size == plain) is (X.numel() >= min_numel)


def test_small_is_the_codec_of_small_tensors(wire_bytes):
    _differ(wire_bytes, {"name": "q8", "min_numel": 1000, "small": "identity"},
            {"name": "q8", "min_numel": 1000, "small": "fp16"})


def test_content_delta_sends_changes_against_a_kept_reference(memory_peers):
    states = {}
    for content in ("params", "delta"):
        p0, _ = memory_peers([0.0, 1.0], {"codec": {"content": content},
                                          "pacing": {"mode": "async"}})
        p0.step()
        states[content] = p0.comm_state()["codec"]["out"]
    assert states["params"]["reference"] is None and states["delta"]["reference"] is not None
