"""Codec throughput and ratio: encode/decode GB/s against memcpy measured in the same run.

Usage: python scripts/bench_codecs.py [--json] [--smoke | --quick] [--no-thp]. Tensors: one
64 MiB float32 tensor (16 MiB with --quick) and the parameters of a small CNN built here; every
codec of ``SPECS`` on each. GB/s = dense input bytes / s; also the wire ratio and the relative
error. ``--smoke`` runs every codec on a 1 MiB tensor and a tiny CNN once (checks the benchmark
runs, measures nothing). Measured figures: ``docs/results/bench_codecs.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

# Large CPU tensors on transparent huge pages: fresh 64 MiB outputs fault 2 MiB pages, not 4 KiB
# (faster decodes: docs/results/bench_codecs.md). A peer process can set the same; --no-thp to
# compare.
if "--no-thp" not in os.sys.argv:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

from gossipml.codecs import build_codec, decode_payload  # noqa: E402
from gossipml.ops.quantize import native_available  # noqa: E402

SPECS = ["identity", "fp16", "bf16", "q8", "q4", "q2", "q8:stochastic=true", "sign", "topk:0.01",
         "randk:0.01", "topk:0.01>q8", "lowrank:2"]


#: Sizes per preset: the big tensor (MiB), timed repeats, the CNN's input side (pixels).
PRESETS: dict[str, dict[str, int]] = {
    "smoke": {"mib": 1, "repeats": 1, "image": 8},
    "quick": {"mib": 16, "repeats": 2, "image": 28},
    "full": {"mib": 64, "repeats": 4, "image": 28},
}


def _cnn(image: int = 28) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(64 * (image - 4) ** 2, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))
    return {k: v.detach() for k, v in net.state_dict().items()}


def _best_s(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _bench(spec: str, tensors: dict[str, torch.Tensor], repeats: int) -> dict:
    codec = build_codec(spec)
    dense = sum(t.numel() * t.element_size() for t in tensors.values())
    payloads = {}

    def encode() -> None:
        for name, t in tensors.items():
            payloads[name] = codec.encode(t, None)[0]

    decoded = {}

    def decode() -> None:
        for name, p in payloads.items():
            decoded[name] = decode_payload(p)

    enc_s, dec_s = _best_s(encode, repeats), _best_s(decode, repeats)
    sent = sum(p.nbytes for p in payloads.values())
    err = sum(float((decoded[k].double() - t.double()).square().sum()) for k, t in tensors.items())
    norm = sum(float(t.double().square().sum()) for t in tensors.values())
    return {"codec": spec, "encode_gbps": dense / enc_s / 1e9, "decode_gbps": dense / dec_s / 1e9,
            "wire_ratio": dense / max(sent, 1), "rel_error": (err / max(norm, 1e-300)) ** 0.5}


def _memcpy_gbps(tensor: torch.Tensor, repeats: int) -> float:
    dst = torch.empty_like(tensor)
    tensor = tensor.contiguous()
    return tensor.numel() * tensor.element_size() / _best_s(lambda: dst.copy_(tensor), repeats) / 1e9


def main(argv: list[str] | None = None) -> int:
    """Run every codec on both tensors and print JSON or a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="16 MiB tensor, fewer repeats")
    size.add_argument("--smoke", action="store_true",
                      help="1 MiB tensor, tiny CNN, one repeat (checks the benchmark runs)")
    parser.add_argument("--no-thp", action="store_true", help="leave THP_MEM_ALLOC_ENABLE unset")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    preset = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    mib, repeats = preset["mib"], preset["repeats"]
    big = torch.randn(mib * 2**20 // 4, generator=torch.Generator().manual_seed(0))
    big = big.view(-1, 2048)  # a matrix, so lowrank has something to factor
    cases = {f"{mib}MiB": {"x": big}, "model": _cnn(preset["image"])}
    rows = []
    for label, tensors in cases.items():
        memcpy = _memcpy_gbps(big if label != "model" else torch.cat(
            [t.reshape(-1) for t in tensors.values()]), repeats + 2)
        for spec in SPECS:
            row = {"tensor": label, "native_kernel": native_available(),
                   "thp": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
                   **_bench(spec, tensors, repeats), "memcpy_gbps": memcpy}
            row["encode_vs_memcpy"] = row["encode_gbps"] / memcpy
            row["decode_vs_memcpy"] = row["decode_gbps"] / memcpy
            rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    head = f"{'codec':<20}{'tensor':<8}{'enc GB/s':>9}{'dec GB/s':>9}{'memcpy':>8}{'enc/mc':>7}" \
           f"{'dec/mc':>7}{'ratio':>8}{'rel_err':>9}"
    print(head)
    for r in rows:
        print(f"{r['codec']:<20}{r['tensor']:<8}{r['encode_gbps']:>9.3f}{r['decode_gbps']:>9.3f}"
              f"{r['memcpy_gbps']:>8.2f}{r['encode_vs_memcpy']:>7.2f}{r['decode_vs_memcpy']:>7.2f}"
              f"{r['wire_ratio']:>8.1f}{r['rel_error']:>9.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
