"""Pure tensor math: packing, block quantization, top-k, random-k, power iteration, cupy path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipml.ops.lowrank import power_step
from gossipml.ops.packing import pack_bits, packed_nbytes, unpack_bits
from gossipml.ops.quantize import block_dequantize, block_quantize
from gossipml.ops.sparse import random_indices, topk_magnitude


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 4, 8]), st.integers(0, 70), st.integers(0, 2**31))
def test_pack_unpack_roundtrip(bits, n, seed):
    codes = torch.randint(0, 2**bits, (n,), generator=torch.Generator().manual_seed(seed),
                          dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.numel() == packed_nbytes(n, bits) == -(-n * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, n), codes)


def test_block_quantize_extremes_hit_end_codes():
    x = torch.tensor([0.0, 1.0, 0.5, 0.25, -3.0, 3.0, 3.0])
    codes, lo, scale = block_quantize(x, 8, 4)
    assert codes.tolist()[:2] == [0, 255] and codes.tolist()[4:] == [0, 255, 255]
    assert torch.allclose(block_dequantize(codes, lo, scale, 4), x, atol=1.0 / 255)
    const, _, s = block_quantize(torch.full((9,), 2.5), 4, 4)
    assert s.eq(0).all() and torch.equal(block_dequantize(const, torch.full((3,), 2.5), s, 4),
                                        torch.full((9,), 2.5))


def test_topk_magnitude_sampled_path_is_exact():
    x = torch.randn(300_000, generator=torch.Generator().manual_seed(0))
    for k in (1, 3000, 30_000):
        got = set(topk_magnitude(x, k).tolist())
        want = set(torch.topk(x.abs(), k).indices.tolist())
        assert got == want


def test_random_indices_distinct_and_reproducible():
    a = random_indices(1_000_000, 5000, seed=7)
    assert torch.equal(a, random_indices(1_000_000, 5000, seed=7))
    assert a.unique().numel() == 5000 and int(a.max()) < 1_000_000
    assert not torch.equal(a, random_indices(1_000_000, 5000, seed=8))
    assert random_indices(10, 10, seed=1).sort().values.tolist() == list(range(10))


def test_power_step_orthonormal_p():
    m = torch.randn(50, 30, dtype=torch.float64)
    p, q = power_step(m, torch.randn(30, 3, dtype=torch.float64))
    assert torch.allclose(p.t() @ p, torch.eye(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(q, m.t() @ p)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cupy_kernels_match_torch_path():
    pytest.importorskip("cupy")
    from gossipml.ops.cupy_quant import cupy_block_dequantize, cupy_block_quantize

    x = torch.randn(1_000_003, device="cuda")
    codes, lo, scale = cupy_block_quantize(x, 8, 256, None)
    ref_codes, ref_lo, ref_scale = block_quantize(x, 8, 256)
    assert torch.allclose(lo, ref_lo) and torch.allclose(scale, ref_scale)
    assert (codes.int() - ref_codes.int()).abs().max() <= 1
    out = cupy_block_dequantize(codes, lo, scale, 256)
    assert torch.allclose(out, block_dequantize(codes, lo, scale, 256), atol=1e-5)
    assert (out - x).abs().max() <= scale.max() * 0.5001 + 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_codecs_run_on_cuda_tensors():
    from gossipml.codecs import build_codec, decode_payload

    x = torch.randn(4099, device="cuda")
    for spec in ["q8", "q4:block=64", "sign", "topk:0.01", "randk:0.01", "lowrank:2", "fp16"]:
        xx = x.view(-1, 1).expand(-1, 3).contiguous() if spec == "lowrank:2" else x
        payload, _ = build_codec(spec).encode(xx, None)
        assert decode_payload(payload, "cuda").device.type == "cuda"
