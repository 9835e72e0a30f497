"""Byzantine behaviour for robustness experiments: what a misbehaving peer sends instead of its
model. Selected per peer with ``[peer] attack = "scale:100"`` and ``attackers = [3]``.

- ``scale:F``: the model times F (a crude model-poisoning attack);
- ``nan``: every entry NaN (receivers must reject it before any rule sees it);
- ``noise:S``: Gaussian noise of standard deviation S instead of the model (seeded).
"""

from __future__ import annotations

from typing import Mapping

import torch

__all__ = ["ATTACKS", "apply_attack", "check_attack"]

ATTACKS = ("scale", "nan", "noise")


def check_attack(spec: str) -> None:
    """Raise ValueError unless ``spec`` is empty or one of ``scale:F``, ``nan``, ``noise:S``."""
    if not spec:
        return
    if not isinstance(spec, str):
        raise ValueError(f"attack must be a string such as 'scale:100', 'nan' or 'noise:1.0', "
                         f"got {spec!r}")
    name, _, arg = spec.partition(":")
    if name not in ATTACKS:
        raise ValueError(f"attack {spec!r} unknown; use one of 'scale:100', 'nan', 'noise:1.0'")
    if name in ("scale", "noise"):
        try:
            float(arg)
        except ValueError:
            raise ValueError(f"attack {spec!r} needs a number, e.g. '{name}:10'") from None


def apply_attack(spec: str, tensors: Mapping[str, torch.Tensor], *, seed: int) -> dict[str, torch.Tensor]:
    """The tensors a Byzantine peer sends in place of ``tensors``."""
    name, _, arg = spec.partition(":")
    if name == "scale":
        return {k: v * float(arg) for k, v in tensors.items()}
    if name == "nan":
        return {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
    if name == "noise":
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return {k: (torch.randn(v.shape, generator=gen) * float(arg)).to(v.device, v.dtype)
                for k, v in tensors.items()}
    raise ValueError(f"unknown attack {spec!r}")
