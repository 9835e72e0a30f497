"""What a peer accepts: its experiment's codecs, in messages sized from its model."""

from __future__ import annotations

import torch

from gossipml.codecs import build_codec, encode_model
from gossipml.comm.budget import header_slack_bytes
from gossipml.config import ExperimentConfig
from gossipml.peer.accepted import configured_codecs, sized_transport, unconfigured_codec


def _cfg(**tables) -> ExperimentConfig:
    return ExperimentConfig.from_dict(tables)


def test_the_configured_codecs_and_no_others():
    assert configured_codecs(_cfg()) == {"identity"}
    assert configured_codecs(_cfg(codec={"spec": "topk:0.01>q8+ef", "allow_biased_params": True})) \
        == {"identity", "topk", "q8"}
    assert configured_codecs(_cfg(codec={"spec": "lowrank:2:fallback=fp16+delta"})) == \
        {"identity", "lowrank", "fp16"}
    assert configured_codecs(_cfg(codec={"spec": "q4+bysize:64:bf16"})) == \
        {"identity", "q4", "bf16"}
    # CHOCO: keyframes, and refreshes only when they are on
    delta = {"spec": "topk:0.1+delta"}
    assert configured_codecs(_cfg(codec=delta, peer={"keyframe_codec": "q8"})) == \
        {"identity", "topk", "q8"}
    assert configured_codecs(_cfg(codec=delta, peer={"refresh_every_rounds": 3})) == \
        {"identity", "topk", "q4"}


def test_a_payload_or_chained_value_codec_not_configured_is_named():
    t = {"w": torch.randn(8, 8)}
    q2, _ = encode_model(t, build_codec("q2"), None)
    chained, _ = encode_model(t, build_codec("topk:0.25>q2"), None)
    raw_sparse, _ = encode_model(t, build_codec("topk:0.25"), None)
    accepted = frozenset({"identity", "topk"})
    assert "'q2'" in unconfigured_codec(q2, accepted)
    assert "'q2' values" in unconfigured_codec(chained, accepted)
    assert unconfigured_codec(raw_sparse, accepted) is None


def test_the_message_limit_follows_the_model_unless_set():
    model = torch.nn.Linear(784, 10)  # 7850 floats: 31,400 bytes
    dense = 7850 * 4
    sized = sized_transport(_cfg(), model, build_codec("identity"), (1, 2))
    assert sized.max_message_bytes == 2 * dense + header_slack_bytes(2)
    assert sized.max_connections == 2 * 2 + 8
    assert sized.receive_bound_bytes == 12 * (8 + 1) * sized.max_message_bytes
    # a codec whose encoding is bigger than dense (bf16 top-k of everything: 2 + 4 bytes each)
    big = sized_transport(_cfg(codec={"spec": "topk:1.0", "allow_biased_params": True}),
                          model.to(torch.bfloat16),
                          build_codec("topk:1.0"), (1,))
    assert big.max_message_bytes >= 2 * 7850 * 6
    explicit = sized_transport(_cfg(transport={"max_message_bytes": 4096, "max_connections": 3}),
                               model, build_codec("identity"), (1, 2))
    assert (explicit.max_message_bytes, explicit.max_connections) == (4096, 3)
