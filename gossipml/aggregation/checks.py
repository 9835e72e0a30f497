"""Reject bad neighbour models (NaN/Inf, missing or extra tensors, wrong shape or dtype).

Every aggregator runs ``filter_contributions`` first, so no rule ever sees such a model. A reason
is ``"<slug>: <detail>"``; the slug (``reason_slug``) is what a counter should key on.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from gossipml.aggregation.base import Contribution

__all__ = ["check_model", "filter_contributions", "reason_slug"]


def check_model(
    params: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> str | None:
    """A rejection reason (``"<slug>: <detail>"``) if ``params`` does not fit ``reference``, else None."""
    missing = sorted(set(reference) - set(params))
    if missing:
        return f"missing_tensor: {len(missing)} missing, e.g. {missing[:3]}"
    extra = sorted(set(params) - set(reference))
    if extra:
        return f"extra_tensor: {len(extra)} unexpected, e.g. {extra[:3]}"
    for name, ref in reference.items():
        x = params[name]
        if not isinstance(x, torch.Tensor):
            return f"not_a_tensor: {name!r} is a {type(x).__name__}"
        if tuple(x.shape) != tuple(ref.shape):
            return f"wrong_shape: {name!r} has shape {tuple(x.shape)}, expected {tuple(ref.shape)}"
        if x.dtype != ref.dtype:
            return f"wrong_dtype: {name!r} is {x.dtype}, expected {ref.dtype}"
        if x.is_floating_point() or x.is_complex():
            finite = torch.isfinite(x)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(x).sum())
                n_inf = int((~finite).sum()) - n_nan
                slug = "nan" if n_nan else "inf"
                return f"{slug}: {name!r} has {n_nan} NaN and {n_inf} Inf values"
    return None


def reason_slug(reason: str) -> str:
    """The counter key of a reason: the text before the first colon."""
    return reason.split(":", 1)[0]


def filter_contributions(
    own: Mapping[str, torch.Tensor], received: Sequence[Contribution]
) -> tuple[list[Contribution], list[tuple[int, str]]]:
    """Split ``received`` into the models that fit ``own`` and ``(sender, reason)`` for the rest."""
    kept: list[Contribution] = []
    rejected: list[tuple[int, str]] = []
    for contribution in received:
        reason = check_model(contribution.params, own)
        if reason is None:
            kept.append(contribution)
        else:
            rejected.append((contribution.sender, reason))
    return kept, rejected
