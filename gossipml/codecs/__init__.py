"""Codecs: compress one tensor into a Payload and back (see :mod:`gossipml.codecs.base`).

Build one with :func:`build_codec` from a :class:`CodecConfig` or a spec string (``"q8"``,
``"topk:0.01>q8+ef"``); decode any payload with :func:`decode_payload`; add a codec with
:func:`register_codec` (the one list of codec names, :mod:`.registry`); whole models with
:func:`encode_model` / :func:`decode_model`; CHOCO-SGD deltas with :mod:`.content`.
"""

from __future__ import annotations

from gossipml.codecs.base import Codec, CodecError, Payload
from gossipml.codecs.combinators import BySize, ErrorFeedback
from gossipml.codecs.config import CodecConfig, build_codec, parse_spec
from gossipml.codecs.content import (DeltaReceiver, DeltaSender, FullSender, choco_step,
                                     filters_changes)
from gossipml.codecs.dense import CastCodec, IdentityCodec
from gossipml.codecs.lowrank import LowRankCodec
from gossipml.codecs.model import decode_model, encode_model, model_nbytes
from gossipml.codecs.quant import QuantCodec, SignCodec
from gossipml.codecs.registry import (CodecEntry, Registry, decode_payload, default_registry,
                                     register_codec)
from gossipml.codecs.sparse import RandKCodec, ThresholdCodec, TopKCodec

__all__ = [
    "Codec", "CodecError", "Payload", "CodecConfig", "build_codec", "parse_spec",
    "decode_payload", "default_registry", "Registry", "register_codec", "CodecEntry", "encode_model", "decode_model",
    "model_nbytes", "IdentityCodec", "CastCodec", "QuantCodec", "SignCodec", "TopKCodec",
    "RandKCodec", "ThresholdCodec", "LowRankCodec", "ErrorFeedback", "BySize", "FullSender",
    "DeltaSender", "DeltaReceiver", "filters_changes", "choco_step",
]
