"""CHOCO delta streams with compressed keyframes: sender and receiver references stay equal."""

from __future__ import annotations

import pytest
import torch

from gossipml.codecs import build_codec
from gossipml.peer.stream import Inbound, Outbox
from gossipml.errors import ConfigError
from gossipml.peer.config import PeerConfig
from gossipml.wire import unpack


def _model(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(64, 33, generator=g), "b": torch.randn(7, generator=g)}


@pytest.mark.parametrize("keyframe_codec", ["identity", "q8", "fp16"])
def test_keyframe_codec_keeps_references_equal_and_costs_its_bytes(keyframe_codec):
    # Prepare: a delta stream with top-10 % changes and a keyframe every 4 rounds
    out = Outbox(0, build_codec("topk:0.1"), delta=True, keyframe_every_rounds=4,
                 keyframe_codec=keyframe_codec)
    inbound = Inbound(torch.device("cpu"))
    sizes = {}
    snapshot = _model(0)  # one buffer set reused every round, as the snapshot pool does
    for r in range(10):
        model = _model(r)
        for k, v in model.items():
            snapshot[k].copy_(v)
        # Execute: encode on the sender, decode on the receiver
        frames = out.frames(snapshot, r, {})
        sizes[r] = sum(memoryview(f).nbytes for f in frames)
        x_hat = inbound.decode(unpack(frames))
        # Assert: the receiver's copy is exactly the sender's reference, every round
        for k, v in out.state_dict()["reference"].items():
            assert torch.equal(x_hat[k], v), (r, k)
        if r % 4 == 0:  # a keyframe: the reference is the model as the keyframe codec carries it
            tol = {"identity": 0.0, "q8": 0.05, "fp16": 5e-3}[keyframe_codec]
            assert all(torch.allclose(x_hat[k], model[k], atol=tol, rtol=0) for k in model)
    raw_keyframe = Outbox(0, build_codec("topk:0.1"), delta=True, keyframe_every_rounds=4)
    raw_bytes = sum(memoryview(f).nbytes for f in raw_keyframe.frames(_model(0), 0, {}))
    if keyframe_codec == "q8":
        assert sizes[0] < raw_bytes / 3
    elif keyframe_codec == "identity":
        assert sizes[0] == raw_bytes


def test_keyframe_codec_is_validated():
    with pytest.raises(ConfigError, match="keyframe_codec"):
        PeerConfig(keyframe_codec="q9")


@pytest.mark.parametrize("refresh_codec", ["q4", "q2", "sign"])
def test_refresh_rounds_send_dense_deltas_and_keep_references_equal(refresh_codec):
    # Prepare: top-5 % deltas, a refresh through a dense low-bit codec every 3rd round, a
    # keyframe at round 0 only; the model drifts a little each round, as in training
    out = Outbox(0, build_codec("topk:0.05"), delta=True, keyframe_every_rounds=1000,
                 refresh_every_rounds=3, refresh_codec=refresh_codec)
    inbound = Inbound(torch.device("cpu"))
    model = _model(0)
    snapshot = {k: v.clone() for k, v in model.items()}
    for r in range(10):
        g = torch.Generator().manual_seed(100 + r)
        for k in model:
            model[k] += 0.05 * torch.randn(model[k].shape, generator=g)
            snapshot[k].copy_(model[k])
        gap_before = sum(float((model[k] - out.state_dict()["reference"][k]).norm())
                         for k in model) if r else None
        # Execute
        frames = out.frames(snapshot, r, {})
        msg = unpack(frames)
        x_hat = inbound.decode(msg)
        # Assert: receiver and sender agree every round; a refresh round says so, every tensor
        # of it travels through the refresh codec, and it brings x_hat much closer to x
        ref = out.state_dict()["reference"]
        assert all(torch.equal(x_hat[k], ref[k]) for k in ref), r
        refresh = r > 0 and r % 3 == 0
        assert bool(msg.info.get("refresh")) == refresh, r
        if refresh:
            assert {p.codec for _, p in msg.tensors} == {refresh_codec}
            gap_after = sum(float((model[k] - ref[k]).norm()) for k in model)
            assert gap_after < 0.8 * gap_before, (r, gap_before, gap_after)
        elif r:
            assert {p.codec for _, p in msg.tensors} != {refresh_codec}


def test_refresh_settings_are_validated():
    with pytest.raises(ConfigError, match="refresh_codec"):
        PeerConfig(refresh_codec="q3")
    with pytest.raises(ConfigError, match="refresh_every_rounds"):
        PeerConfig(refresh_every_rounds=-1)
    with pytest.raises(ConfigError, match="refresh_every_rounds"):
        PeerConfig(refresh_every_rounds=True)


def test_refresh_needs_delta_content():
    from gossipml.config import ExperimentConfig

    with pytest.raises(ConfigError, match="content"):
        ExperimentConfig.from_dict({"codec": {"spec": "topk:0.01+ef"},
                                    "peer": {"refresh_every_rounds": 2}})
    cfg = ExperimentConfig.from_dict({"codec": {"spec": "topk:0.01+delta"},
                                      "peer": {"refresh_every_rounds": 2}})
    assert cfg.peer.refresh_every_rounds == 2
