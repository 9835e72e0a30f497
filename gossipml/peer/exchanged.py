"""What a peer exchanges: the floating-point entries of its model's state dict, and their specs."""

from __future__ import annotations

from typing import Mapping

import torch

__all__ = ["exchanged_state", "tensor_specs"]


def exchanged_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a peer exchanges: every floating-point entry of the model's state dict."""
    return {k: v for k, v in model.state_dict(keep_vars=False).items()
            if torch.is_floating_point(v)}


def tensor_specs(params: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype name, shape): what ``wire.unpack`` checks an incoming model against."""
    return {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in params.items()}
