"""Stateful behaviour: stochastic rounding unbiased, error feedback bounded, CHOCO copies equal."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipml.codecs import (DeltaReceiver, DeltaSender, build_codec,
                             decode_model, decode_payload, encode_model)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_stochastic_rounding_is_unbiased(bits):
    x = torch.randn(2048, generator=torch.Generator().manual_seed(0))
    codec, state, total, trials = build_codec(f"q{bits}:block=256:stochastic=true"), None, 0, 400
    acc = torch.zeros_like(x, dtype=torch.float64)
    for _ in range(trials):
        payload, state = codec.encode(x, state)
        acc += decode_payload(payload).double()
    mean = acc / trials
    step = (x.view(-1, 256).amax(1) - x.view(-1, 256).amin(1)) / (2**bits - 1)
    sigma = (step / 2 / math.sqrt(trials)).repeat_interleave(256).double()  # std <= step / 2
    z = (mean - x.double()) / sigma
    assert z.abs().max() < 6  # no element biased
    assert abs(z.mean()) < 6 / math.sqrt(x.numel())  # and no bias overall
    det = decode_payload(build_codec(f"q{bits}:block=256").encode(x, None)[0])
    assert (mean - x).abs().mean() < (det - x).abs().mean()  # averaging beats one rounding


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["topk:0.05", "sign", "q4:block=32", "q8", "randk:0.2>q8", "topk:0.1>q4"]),
       st.integers(0, 10_000), st.integers(1, 400))
def test_error_feedback_sent_sum_tracks_input_sum(spec, seed, numel):
    gen = torch.Generator().manual_seed(seed)
    codec, state = build_codec(spec + "+ef"), None
    sum_in = torch.zeros(numel, dtype=torch.float64)
    sum_out = torch.zeros(numel, dtype=torch.float64)
    g = 0.0
    for _ in range(30):
        x = torch.randn(numel, generator=gen)
        g = max(g, float(x.norm()))
        payload, state = codec.encode(x, state)
        sum_in += x.double()
        sum_out += decode_payload(payload).double()
    residual = state[0].double()
    assert torch.allclose(sum_in - sum_out, residual, atol=1e-3 * (1 + residual.abs().max()))
    if spec.startswith("topk:0.05"):  # ||e'|| <= sqrt(1 - d) (G + ||e||), d = k / n
        d = max(1, math.ceil(0.05 * numel)) / numel
        r = math.sqrt(1 - d)
        assert residual.norm() <= r * g / (1 - r) + 1e-6 if d < 1 else residual.norm() < 1e-5
    elif spec == "sign":  # contraction with d >= 1 / n
        r = math.sqrt(1 - 1 / numel)
        assert residual.norm() <= (r * g / (1 - r) if r < 1 else 1e-5) + 1e-5
    elif spec.startswith("q"):  # |e| <= step / 2 with step <= 2 (max|x| + max|e|) / levels
        levels = 255 if spec == "q8" else 15
        bound = float(g) / (levels - 1) * 1.01
        assert residual.abs().max() <= bound


@pytest.mark.parametrize("spec", ["q4:block=64", "topk:0.1>q8", "sign", "lowrank:2", "randk:0.3"])
def test_choco_sender_and_receiver_references_stay_identical(spec):
    gen = torch.Generator().manual_seed(5)
    model = {"w": torch.randn(24, 16, generator=gen), "b": torch.randn(16, generator=gen)}
    sender, receiver = DeltaSender(build_codec(spec)), DeltaReceiver()  # x_hat is the EF
    for _ in range(25):
        model = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in model.items()}
        copy = receiver.apply(3, sender.encode(model))
        for name in model:
            assert torch.equal(copy[name], sender.reference[name])
    err = sum(float((model[k] - sender.reference[k]).norm()) for k in model)
    assert err < 0.5 * sum(float(v.norm()) for v in model.values())  # x_hat follows x


def test_model_helpers_roundtrip_and_keep_int_tensors_raw():
    model = {"w": torch.randn(5, 3), "n": torch.tensor(7), "h": torch.randn(4).half()}
    items, states = encode_model(model, build_codec("q8+ef"), None)
    assert set(states) == set(model)
    out = decode_model(items, "cpu")
    assert torch.equal(out["n"], model["n"]) and out["h"].dtype == torch.float16
    assert torch.allclose(out["w"], model["w"], atol=0.05)
