"""What a peer accepts: exactly the codecs its experiment configures, in messages of a size its
model and codecs can make.

A payload names the codec that made it, and any registered codec could decode it; but a peer has
no reason to run a decoder its experiment never sends with (each has its own costs and checks),
so a payload of any other codec is refused before decoding (``codec_not_configured``). Accepted:
the ``[codec] spec``'s stages (a chained ``A>B``'s value codec ``B`` inside ``A``'s payload
included), its ``+bysize`` small codec and a low-rank ``fallback``; with CHOCO deltas the
``[peer] keyframe_codec`` and, when refreshes are on, ``refresh_codec``; and ``identity`` always
(non-floating tensors travel raw, and so do pull answers).

The transport's unset limits are sized here (:func:`sized_transport`): ``max_message_bytes`` from
the largest encoding of the model among those codecs (``comm/budget.py``), ``max_connections``
from the neighbours.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from gossipml.codecs import Codec, build_codec
from gossipml.codecs.config import CodecConfig, parse_spec
from gossipml.codecs.registry import codec_entry
from gossipml.comm.budget import message_bytes_for
from gossipml.comm.config import DEFAULT_MAX_CONNECTIONS, TransportConfig
from gossipml.config import ExperimentConfig
from gossipml.peer.exchanged import exchanged_state

__all__ = ["accepted_codecs", "configured_codecs", "unconfigured_codec", "largest_encoding_bytes",
           "sized_transport", "REASON", "RAW_VALUES", "CONNECTIONS_PER_NEIGHBOR",
           "SPARE_CONNECTIONS"]

REASON = "codec_not_configured"
#: A sparse payload's ``meta["values"]`` when its kept values travel as they are.
RAW_VALUES = "raw"
CONNECTIONS_PER_NEIGHBOR = 2  # its DEALER, and a restarted one's while the old one times out
SPARE_CONNECTIONS = 8


def _spec_codecs(spec: str) -> set[str]:
    plan = parse_spec(spec)
    names = {name for name, _ in plan["stages"]}
    for name, params in plan["stages"]:
        if codec_entry(name).role == "matrix":  # low-rank sends tensors it cannot shrink so
            names.add(str(params.get("fallback", "identity")))
    if plan["bysize"] is not None:
        names.add(plan["bysize"][1])
    return names


def accepted_codecs(codec: CodecConfig, *, keyframe_codec: str = "identity",
                    refresh_codec: str | None = None) -> frozenset[str]:
    """The payload codec names a peer with this ``[codec]`` table accepts (module docstring);
    ``refresh_codec`` only when CHOCO refreshes are on."""
    names = _spec_codecs(codec.spec) | {"identity"}
    if codec.content == "delta":
        names |= _spec_codecs(keyframe_codec)
        if refresh_codec is not None:
            names |= _spec_codecs(refresh_codec)
    return frozenset(names)


def configured_codecs(cfg: ExperimentConfig) -> frozenset[str]:
    """:func:`accepted_codecs` of an experiment."""
    refresh = cfg.peer.refresh_codec if cfg.peer.refresh_every_rounds else None
    return accepted_codecs(cfg.codec, keyframe_codec=cfg.peer.keyframe_codec,
                           refresh_codec=refresh)


def _encoders(cfg: ExperimentConfig, codec: Codec) -> list[Codec]:
    """Every codec this experiment's peers encode models with."""
    out = [codec, build_codec("identity")]
    if cfg.codec.content == "delta":
        out.append(build_codec(cfg.peer.keyframe_codec))
        if cfg.peer.refresh_every_rounds:
            out.append(build_codec(cfg.peer.refresh_codec))
    return out


def largest_encoding_bytes(params: Mapping[str, torch.Tensor], codecs: Iterable[Codec]) -> int:
    """Payload bytes of the largest encoding of ``params`` among ``codecs`` (by each codec's
    ``estimate_nbytes``; non-floating tensors travel raw), never below the dense bytes."""
    dense = sum(t.numel() * t.element_size() for t in params.values())
    best = dense
    for codec in codecs:
        total = 0
        for t in params.values():
            raw = t.numel() * t.element_size()
            try:
                total += max(raw, int(codec.estimate_nbytes(tuple(t.shape), t.dtype))) \
                    if t.is_floating_point() else raw
            except (ValueError, TypeError, RuntimeError):
                total += raw
        best = max(best, total)
    return best


def sized_transport(cfg: ExperimentConfig, model: torch.nn.Module, codec: Codec,
                    neighbor_ids: tuple[int, ...], *, swarm: bool = False,
                    extra: Mapping[str, torch.Tensor] | None = None) -> TransportConfig:
    """``cfg.transport`` with unset limits sized for this model and neighbourhood: messages up to
    :func:`~gossipml.comm.budget.message_bytes_for` its largest encoding, and
    ``CONNECTIONS_PER_NEIGHBOR`` connections per neighbour plus ``SPARE_CONNECTIONS`` (a swarm
    peer, whose neighbours come and go, ``DEFAULT_MAX_CONNECTIONS``); ``extra``: tensors sent raw
    next to the model (asynchronous ADMM's running sums)."""
    params = exchanged_state(model)
    extra = dict(extra or {})
    payload = largest_encoding_bytes(params, _encoders(cfg, codec)) + sum(
        t.numel() * t.element_size() for t in extra.values())
    connections = DEFAULT_MAX_CONNECTIONS if swarm else \
        CONNECTIONS_PER_NEIGHBOR * len(neighbor_ids) + SPARE_CONNECTIONS
    return cfg.transport.sized(message_bytes_for(payload, len(params) + len(extra)),
                              connections)


def unconfigured_codec(tensors: Iterable[tuple[str, Any]],
                       accepted: frozenset[str]) -> str | None:
    """A description of the first payload (or chained value codec) not in ``accepted``; None
    when every one is. Reads only names: nothing is decoded."""
    for name, payload in tensors:
        if payload.codec not in accepted:
            return f"tensor {name!r:.80} is {payload.codec!r:.40}; accepted: {sorted(accepted)}"
        if not codec_entry(payload.codec).selects:
            continue
        meta = payload.meta if isinstance(payload.meta, Mapping) else {}
        values = meta.get("values")
        if isinstance(values, str) and values != RAW_VALUES and values not in accepted:
            return (f"tensor {name!r:.80} carries {values!r:.40} values; "
                    f"accepted: {sorted(accepted)}")
    return None
