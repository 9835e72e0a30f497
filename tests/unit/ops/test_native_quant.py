"""The optional C quantization kernel (gossipml.ops._qnative) against the pure torch path."""

from __future__ import annotations

import shutil
import sysconfig

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gossipml.ops.native as native
from gossipml.codecs import build_codec, decode_payload
from gossipml.ops.quantize import block_dequantize, block_quantize

NO_NATIVE = native.NO_NATIVE_ENV


def _require_native() -> None:
    """Skip (with the reason) when the extension was not built; every other gap fails."""
    if native.native_module() is None:
        pytest.skip("gossipml.ops._qnative not built (no C compiler at install time)")
    assert native.fused_modes() != (None, None), "torch's addcmul rounding matched neither mode"


class _Recorder:
    """Delegates to the real compiled module and counts calls, to see which path ran."""

    def __init__(self, module) -> None:
        self.module, self.calls = module, []

    def quantize(self, *args):
        self.calls.append("quantize")
        return self.module.quantize(*args)

    def dequantize(self, *args):
        self.calls.append("dequantize")
        return self.module.dequantize(*args)


@pytest.fixture
def recorder(monkeypatch):
    _require_native()
    rec = _Recorder(native.native_module())
    monkeypatch.setitem(native._cache, "module", rec)
    monkeypatch.delenv(NO_NATIVE, raising=False)
    return rec


def _both(x: torch.Tensor, bits: int, block: int):
    """(torch path result, native path result), each (codes, lo, scale, decoded)."""
    out = []
    for flag in ("1", "0"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(NO_NATIVE, flag)
            codes, lo, scale = block_quantize(x, bits, block)
            out.append((codes, lo, scale, block_dequantize(codes, lo, scale, block)))
    return out


def _assert_identical(a, b) -> None:
    for name, u, v in zip(("codes", "lo", "scale", "decoded"), a, b):
        assert u.dtype == v.dtype and u.shape == v.shape, name
        torch.testing.assert_close(u, v, rtol=0, atol=0, equal_nan=True, msg=name)


def _sample(n: int, seed: int, exponent: int, offset: float, constant: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen) * 10.0**exponent + offset
    if constant and n:
        x[: max(1, n // 3)] = x[0].item()  # constant leading block(s)
    return x


SIZES = st.one_of(st.sampled_from([0, 1, 2, 7, 511, 512, 513, 1024, 4096, 4097, 12289]),
                  st.integers(0, 20000))


@settings(max_examples=80, deadline=None)
@given(n=SIZES, block=st.sampled_from([1, 7, 512, 4096]), bits=st.integers(1, 8),
       seed=st.integers(0, 2**31), exponent=st.integers(-30, 30),
       offset=st.sampled_from([0.0, 1.0, -1e3, 3e7, -1e30]), constant=st.booleans())
def test_native_matches_torch(n, block, bits, seed, exponent, offset, constant):
    """Codes, lo, scale and decodes are bit-identical over sizes, blocks, bits and magnitudes."""
    _require_native()
    torch_path, native_path = _both(_sample(n, seed, exponent, offset, constant), bits, block)
    _assert_identical(torch_path, native_path)
    if n:
        assert int(native_path[0].max()) < 1 << bits  # SHRINK guard: codes never wrap


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), block=st.sampled_from([1, 7, 512]), seed=st.integers(0, 2**31),
       kinds=st.lists(st.sampled_from(["nan", "inf", "-inf", "big", "-big"]), min_size=1,
                      max_size=6))
def test_native_matches_torch_nonfinite(n, block, seed, kinds):
    """inf / NaN / float32-max inputs: same codes (NaN block: lo = scale = NaN, codes 0)."""
    _require_native()
    x = _sample(n, seed, 0, 0.0, False)
    values = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "big": 3e38,
              "-big": -3e38}
    gen = torch.Generator().manual_seed(seed + 1)
    for kind in kinds:
        x[int(torch.randint(n, (1,), generator=gen))] = values[kind]
    torch_path, native_path = _both(x, 8, block)
    _assert_identical(torch_path, native_path)


def test_constant_and_tail_blocks_exact(recorder):
    """A constant block has scale 0 and codes 0 and decodes exactly; the short tail block too."""
    x = torch.cat([torch.full((512,), -2.75), torch.linspace(-1, 1, 512), torch.full((5,), 7.0)])
    codes, lo, scale = block_quantize(x, 8, 512)
    assert recorder.calls == ["quantize"]
    assert scale[0] == 0 and scale[2] == 0 and int(codes[:512].max()) == 0
    out = block_dequantize(codes, lo, scale, 512)
    assert torch.equal(out[:512], x[:512]) and torch.equal(out[-5:], x[-5:])
    assert float((out - x).abs().max()) <= float(scale.max()) / 2


def test_no_native_env_forces_torch_path(recorder, monkeypatch):
    """GOSSIPML_NO_NATIVE=1 (read per call) keeps the kernel unused; unset, it runs."""
    x = torch.randn(3000, generator=torch.Generator().manual_seed(3))
    monkeypatch.setenv(NO_NATIVE, "1")
    codes, lo, scale = block_quantize(x, 8, 512)
    block_dequantize(codes, lo, scale, 512)
    assert recorder.calls == [] and not native.native_available()
    monkeypatch.delenv(NO_NATIVE)
    codes, lo, scale = block_quantize(x, 8, 512)
    block_dequantize(codes, lo, scale, 512)
    assert recorder.calls == ["quantize", "dequantize"]


def test_fallback_cases_stay_on_torch(recorder):
    """Stochastic rounding, non-contiguous and float64 inputs (after the cast) keep working."""
    x = torch.randn(4000, generator=torch.Generator().manual_seed(4))
    block_quantize(x, 8, 512, generator=torch.Generator().manual_seed(0))
    block_quantize(x[::2], 4, 512)
    assert recorder.calls == []
    block_quantize(x.double(), 8, 512)  # cast to contiguous float32 first: native is fine
    assert recorder.calls == ["quantize"]


@pytest.mark.parametrize("spec", ["q8", "q4", "q2"])
def test_codec_round_trip_uses_native(spec, recorder):
    """build_codec('q8') etc. go through the kernel and stay within scale / 2 per element."""
    x = torch.randn(64, 77, generator=torch.Generator().manual_seed(5))
    codec = build_codec(spec)
    payload, _ = codec.encode(x, None)
    y = decode_payload(payload)
    assert recorder.calls == ["quantize", "dequantize"]
    _, lo, scale = block_quantize(x.reshape(-1), codec.bits, codec.block)
    bound = scale.repeat_interleave(codec.block)[: x.numel()].reshape(x.shape) / 2
    assert y.shape == x.shape and bool(((y - x).abs() <= bound * (1 + 1e-5) + 1e-7).all())


def test_extension_built_when_compiler_present():
    """An install on a machine with a C compiler must have built gossipml.ops._qnative."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None and shutil.which("gcc") is None:
        pytest.skip(f"no C compiler ({compiler!r} / gcc) on PATH: the torch path is expected")
    assert native.native_module() is not None, (
        "a C compiler is on PATH but gossipml.ops._qnative did not import: reinstall with "
        "`pip install -e '.[dev]'` and read the build log")
