"""Which torch device a peer trains on."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda``/``cuda:N`` must exist
    (a clear error otherwise: there is no silent fallback, so a run never lies about its device)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {spec!r} asked for, but torch sees no CUDA GPU "
                               f"(torch {torch.__version__}); set [task] device = 'auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {spec!r} asked for, but only "
                               f"{torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device
