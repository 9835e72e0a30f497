"""Round-trip properties of every codec: decode(encode(x)) within the bound its docstring states."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipml.codecs import build_codec, decode_payload

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
EPS = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7,
       torch.float64: 2.0**-23}  # output rounding (float64 goes through float32 in q/sign)


@st.composite
def tensors(draw, min_dims: int = 0):
    """Random tensors: empty, one element, odd lengths, non-contiguous views, every dtype."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=min_dims, max_size=3)))
    if draw(st.booleans()):
        shape = tuple(draw(st.sampled_from([(1,), (0,), (1, 1), (3, 7), (1023,), (33, 17)])))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    noncontig = draw(st.booleans()) and len(shape) >= 2
    base_shape = (shape[-1], *shape[:-1]) if noncontig else shape
    x = (torch.randn(base_shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    if noncontig:
        x = x.movedim(0, -1)
        assert x.shape == shape
    return x


def _roundtrip(spec: str, x: torch.Tensor) -> torch.Tensor:
    payload, _ = build_codec(spec).encode(x, None)
    assert payload.nbytes == sum(memoryview(b).nbytes for b in payload.buffers)
    y = decode_payload(payload)
    assert y.dtype == x.dtype and y.shape == x.shape
    return y


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64).reshape(-1)


@settings(max_examples=60, deadline=None)
@given(tensors())
def test_identity_is_exact(x):
    assert torch.equal(_roundtrip("identity", x), x)


@settings(max_examples=60, deadline=None)
@given(tensors(), st.sampled_from([("fp16", 2.0**-11, 2.0**-24), ("bf16", 2.0**-8, 1e-38)]))
def test_casts_within_relative_bound(x, case):
    spec, rel, absolute = case
    y = _roundtrip(spec, x)
    err = (_f64(y) - _f64(x)).abs()
    bound = _f64(x).abs() * (rel + EPS[x.dtype]) + absolute
    assert bool((err <= bound).all())


@settings(max_examples=80, deadline=None)
@given(tensors(), st.sampled_from([8, 4, 2]), st.sampled_from([1, 7, 64, 512]))
def test_block_quant_within_half_step(x, bits, block):
    y = _roundtrip(f"q{bits}:block={block}", x)
    xf, err = _f64(x), (_f64(y) - _f64(x)).abs()
    levels = 2**bits - 1
    for start in range(0, xf.numel(), block):  # the reference step, computed independently
        part = xf[start:start + block]
        step = (part.max() - part.min()).item() / levels
        # half a step, plus the shrink guard's levels * 2**-20 steps (ops.quantize._SHRINK),
        # plus float32 rounding of the values
        tol = step * (0.5 + levels * 2.0**-20) * (1 + 1e-6) \
            + part.abs().max().item() * 2 * EPS[x.dtype] + 1e-30
        assert err[start:start + block].max().item() <= tol


@settings(max_examples=60, deadline=None)
@given(tensors())
def test_sign_error_identity(x):
    y = _roundtrip("sign", x)
    xf, yf = _f64(x), _f64(y)
    if xf.numel() == 0:
        return
    expected = xf.square().sum() - xf.abs().sum() ** 2 / xf.numel()
    got = (yf - xf).square().sum()
    assert got <= max(expected, 0) * 1.01 + xf.square().sum() * 4 * EPS[x.dtype] + 1e-30


@settings(max_examples=60, deadline=None)
@given(tensors(), st.sampled_from([0.01, 0.1, 0.5, 1.0]))
def test_topk_keeps_the_largest_exactly(x, fraction):
    y = _roundtrip(f"topk:fraction={fraction}", x)
    xf, yf = _f64(x), _f64(y)
    if xf.numel() == 0:
        return
    k = max(1, math.ceil(fraction * xf.numel()))
    kept = yf != 0
    assert int(kept.sum()) <= k
    assert torch.equal(yf[kept], xf[kept])
    if kept.any() and (~kept).any():
        assert xf[~kept].abs().max() <= xf[kept].abs().min()
    assert (xf - yf).square().sum() <= (1 - k / xf.numel()) * xf.square().sum() * (1 + 1e-9)


@settings(max_examples=50, deadline=None)
@given(tensors(), st.sampled_from([0.05, 0.3, 1.0]))
def test_randk_sends_true_values_at_seeded_positions(x, fraction):
    y = _roundtrip(f"randk:{fraction}", x)
    xf, yf = _f64(x), _f64(y)
    assert bool(((yf == xf) | (yf == 0)).all())
    assert int((yf != 0).sum()) <= max(1, math.ceil(fraction * xf.numel()))


@settings(max_examples=50, deadline=None)
@given(tensors(), st.sampled_from([0.0, 0.01, 1.0]))
def test_threshold_copy_within_threshold(x, thr):
    y = _roundtrip(f"threshold:{thr}", x)
    err = (_f64(y) - _f64(x)).abs()
    assert bool((err <= thr + _f64(x).abs() * EPS[x.dtype]).all())


@settings(max_examples=50, deadline=None)
@given(tensors(min_dims=2), st.sampled_from([1, 2, 4]))
def test_lowrank_is_a_projection(x, rank):
    y = _roundtrip(f"lowrank:{rank}:min_gain=0.01", x)
    xf, yf = _f64(x), _f64(y)
    assert (yf - xf).norm() <= xf.norm() * (1 + 1e-3) + 1e-30


def test_lowrank_exact_on_low_rank_matrix_and_falls_back_for_vectors():
    gen = torch.Generator().manual_seed(1)
    m = torch.randn(64, 2, generator=gen) @ torch.randn(2, 48, generator=gen)
    codec = build_codec("lowrank:2")
    payload, state = codec.encode(m, None)
    assert payload.codec == "lowrank" and payload.nbytes == (64 + 48) * 2 * 4
    assert torch.allclose(decode_payload(payload), m, atol=1e-4)
    vec_payload, _ = codec.encode(torch.ones(10), state)
    assert vec_payload.codec == "identity"
    conv = torch.randn(16, 8, 3, 3, generator=gen)
    assert decode_payload(codec.encode(conv, None)[0]).shape == conv.shape


def test_chained_topk_then_q8_quantizes_kept_values():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(2))
    plain, _ = build_codec("topk:0.05").encode(x, None)
    chained, _ = build_codec("topk:0.05>q8").encode(x, None)
    assert chained.nbytes < plain.nbytes * 0.7
    y, y_plain = decode_payload(chained), decode_payload(plain)
    kept = y_plain != 0
    step = (x[kept].max() - x[kept].min()) / 255
    assert ((y - y_plain)[kept].abs().max() <= step / 2 * 1.001)
    assert ((y != 0) <= kept).all()


def test_every_codec_estimate_matches_wire_bytes():
    x = torch.randn(37, 29)
    for spec in ["identity", "fp16", "bf16", "q8", "q4:block=64", "q2", "sign", "topk:0.1",
                 "randk:0.1", "lowrank:2"]:
        codec = build_codec(spec)
        payload, _ = codec.encode(x, None)
        assert codec.estimate_nbytes(tuple(x.shape), x.dtype) == payload.nbytes, spec
