"""Every codec checks its meta against the tensor it decodes: random metas and buffer sizes only
ever raise CodecError (or decode to the expected tensor), and never allocate more than a small
multiple of the expected tensor (measured as the peak virtual memory of a child process)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipml.codecs import CodecError, Payload, build_codec, decode_model, decode_payload

SHAPE = (6, 10)
EXPECTED = {"w": ("float32", SHAPE)}
SPECS = ["identity", "fp16", "bf16", "q8", "q4", "q2", "sign", "topk:0.25", "randk:0.25",
         "threshold", "lowrank", "topk:0.25>q8", "randk:0.25>sign"]
HUGE = [2**31, 2**40, 2**40 + 1, 2**62, 2**63 - 1, 2**64 - 1, -1, -(2**63)]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def good_payload(spec: str) -> Payload:
    """The payload ``spec`` makes for a fixed float32 tensor of SHAPE."""
    x = torch.linspace(-2, 3, 60).reshape(SHAPE)
    payload, _ = build_codec(spec).encode(x, None)
    return payload


def mutate(payload: Payload, rng: random.Random) -> Payload:
    """The payload with some meta values replaced (often by huge or odd values), some keys added
    or dropped, and some buffers resized."""
    meta = dict(payload.meta)
    for key in list(meta) + ["block", "k", "rank", "seed", "values", "wire", "v.block"]:
        roll = rng.random()
        if roll < 0.35:
            meta[key] = rng.choice(HUGE + [0, 1, 59, 60, 61, 1.5, float("nan"), None, "x",
                                           "float64", "raw", "q8", "lowrank", [1], True])
        elif roll < 0.45:
            meta.pop(key, None)
    buffers = list(payload.buffers)
    for i, buf in enumerate(buffers):
        if rng.random() < 0.3:
            n = np.asarray(buf).nbytes
            buffers[i] = bytes(rng.choice([0, 1, max(n - 1, 0), n + 1, 2 * n, 125]))
    if rng.random() < 0.1:
        buffers = buffers[:-1] if rng.random() < 0.5 else buffers + [b"\0" * 8]
    return Payload(payload.codec, payload.dtype, payload.shape, meta, tuple(buffers))


def decode_or_refuse(payload: Payload) -> str:
    """'ok' (the expected tensor came back) or 'refused' (CodecError); anything else raises."""
    try:
        out = decode_model([("w", payload)], expected=EXPECTED)["w"]
    except CodecError as exc:
        assert "allocate" not in str(exc), exc  # an allocation failure is not a check
        return "refused"
    assert out.shape == SHAPE and out.dtype == torch.float32
    return "ok"


@SETTINGS
@given(st.sampled_from(SPECS), st.randoms(use_true_random=False))
def test_random_metas_and_buffers_only_raise_codec_error(spec, rng):
    decode_or_refuse(mutate(good_payload(spec), rng))


@pytest.mark.parametrize("spec", SPECS)
def test_good_payloads_decode(spec):
    assert decode_or_refuse(good_payload(spec)) == "ok"


def test_expected_shape_and_dtype_are_checked_before_decoding():
    p = good_payload("topk:0.25")
    huge = Payload(p.codec, p.dtype, (1 << 16, 1 << 16), {**p.meta, "k": 0}, p.buffers[:1]
                   + (b"",))
    with pytest.raises(CodecError, match="this model has"):  # would be zeros(2**32) unchecked
        decode_model([("w", huge)], expected=EXPECTED)
    with pytest.raises(CodecError, match="not in this model"):
        decode_model([("v", p)], expected=EXPECTED)
    with pytest.raises(CodecError, match="this model has"):
        decode_model([("w", Payload(p.codec, "float64", SHAPE, p.meta, p.buffers))],
                     expected=EXPECTED)


def sign_125_bytes() -> Payload:
    """Issue #15: 1000 sign bits (125 bytes) and one scale, with meta.block = 2**28."""
    bits = np.full(125, 0b10101010, np.uint8)
    return Payload("sign", "float32", (1000,), {"block": 1 << 28},
                   (bits, np.ones(1, np.float32)))


def test_sign_with_a_huge_block_is_one_block():
    """A block longer than the tensor is one block (senders send block=512 for short tensors);
    it no longer sizes ``repeat_interleave`` (1 GiB for this 129-byte payload before)."""
    out = decode_payload(sign_125_bytes())
    want = decode_payload(Payload("sign", "float32", (1000,), {"block": 1000},
                                  sign_125_bytes().buffers))
    assert torch.equal(out, want) and out.abs().max() == 1.0


def _vm_peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmPeak in /proc/self/status")


def _child(n_random: int) -> dict:
    """(Run in a fresh process.) Peak virtual memory growth over hostile decodes."""
    for spec in SPECS:  # warm up: kernels, thread pools, lazy imports
        decode_or_refuse(good_payload(spec))
    decode_payload(Payload("sign", "float32", (1000,), {"block": 1000}, sign_125_bytes().buffers))
    base = _vm_peak_bytes()
    decode_payload(sign_125_bytes())
    after_sign = _vm_peak_bytes()
    rng = random.Random(15)
    outcomes = [decode_or_refuse(mutate(good_payload(rng.choice(SPECS)), rng))
                for _ in range(n_random)]
    return {"sign": after_sign - base, "all": _vm_peak_bytes() - base,
            "refused": outcomes.count("refused"), "ok": outcomes.count("ok")}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_hostile_metas_allocate_little():
    """Peak virtual memory of a child process grows by under 64 MiB over the 125-byte sign
    payload and 300 random hostile payloads (the expected tensor is 240 bytes)."""
    out = subprocess.run([sys.executable, __file__, "300"], capture_output=True, text=True,
                         timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["sign"] < 64 * 2**20 and got["all"] < 64 * 2**20, got
    assert got["refused"] > 30 and got["ok"] > 10, got  # both outcomes were exercised


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]))))
