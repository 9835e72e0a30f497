"""Delta streams: CHOCO references with compressed keyframes and refreshes, and the threshold
filter's per-receiver streams (changes added to the copy, gaps repaired by keyframes)."""

from __future__ import annotations

import pytest
import torch

from gossipml.codecs import build_codec
from gossipml.peer.stream import DeltaGap, Inbound, Outbox
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


# ---- the threshold filter: one stream per receiver, changes added to the receiver's copy ------

def _send(out: Outbox, x: dict[str, torch.Tensor], r: int, dest: int):
    """Encode ``x`` for ``dest`` as round ``r``; the message as the receiver unpacks it."""
    return unpack(out.frames(x, r, {}, dest=dest))


def test_threshold_params_receiver_adds_the_change_to_its_copy():
    # Prepare: issue #16's case: content = "params", a neighbour's model [2, 1, 1, 0]
    out = Outbox(0, build_codec("threshold:0.5"), delta=False, keyframe_every_rounds=100)
    inbound = Inbound(torch.device("cpu"))
    rounds = [[2.0, 1.0, 1.0, 0.0], [2.6, 1.2, 1.0, 0.0], [2.6, 1.6, 1.0, -0.3]]
    want = [[2.0, 1.0, 1.0, 0.0], [2.6, 1.0, 1.0, 0.0], [2.6, 1.6, 1.0, 0.0]]
    for r, (x, expected) in enumerate(zip(rounds, want)):
        # Execute
        msg = _send(out, {"w": torch.tensor(x)}, r, dest=1)
        got = inbound.decode(msg)["w"]
        # Assert: the first message is a keyframe (the model itself), then only changes past 0.5
        # travel and the receiver adds them to what it has (not [0.6, 0, 0, 0])
        assert msg.kind == "delta" and bool(msg.info.get("keyframe")) == (r == 0)
        assert torch.allclose(got, torch.tensor(expected), atol=1e-6), (r, got)
        assert float((got - torch.tensor(x)).abs().max()) <= 0.5 + 1e-6


@pytest.mark.parametrize("delta", [False, True])
def test_threshold_streams_per_destination_survive_a_changing_topology(delta):
    # Prepare: three receivers; each round the sender pushes to a different subset, as a
    # per-round random topology does; the model drifts every round
    thr = 0.05
    out = Outbox(0, build_codec(f"threshold:{thr}"), delta=delta, keyframe_every_rounds=1000)
    assert out.per_destination
    receivers = {d: Inbound(torch.device("cpu")) for d in (1, 2, 3)}
    dests_by_round = [(1, 2), (3,), (1,), (2, 3), (1, 3), (2,), (1, 2, 3), (3,)]
    model = _model(0)
    for r, dests in enumerate(dests_by_round):
        g = torch.Generator().manual_seed(50 + r)
        model = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in model.items()}
        for d in dests:
            # Execute
            got = receivers[d].decode(_send(out, model, r, d))
            # Assert: no gap for a receiver left out of earlier rounds, copy within threshold
            err = max(float((got[k] - model[k]).abs().max()) for k in model)
            assert err <= thr + 1e-6, (r, d, err)
    with pytest.raises(ValueError, match="pass dest"):
        out.frames(model, 99, {})


def test_threshold_lost_message_is_a_gap_until_the_next_keyframe():
    # Prepare: a keyframe every 3 rounds; round 1's message to the receiver is lost
    thr = 0.05
    out = Outbox(0, build_codec(f"threshold:{thr}"), delta=False, keyframe_every_rounds=3)
    inbound = Inbound(torch.device("cpu"))
    model = _model(1)
    outcome = {}
    for r in range(5):
        g = torch.Generator().manual_seed(r)
        model = {k: v + 0.2 * torch.randn(v.shape, generator=g) for k, v in model.items()}
        msg = _send(out, model, r, dest=4)
        if r == 1:
            continue
        # Execute
        try:
            got = inbound.decode(msg)
        except DeltaGap:
            outcome[r] = "gap"
            continue
        # Assert (below): the receiver never used a copy that missed a change
        err = max(float((got[k] - model[k]).abs().max()) for k in model)
        outcome[r] = "keyframe" if msg.info.get("keyframe") else "delta"
        assert err <= thr + 1e-6, (r, err)
    assert outcome == {0: "keyframe", 2: "gap", 3: "keyframe", 4: "delta"}


def test_threshold_streams_go_on_after_a_restart():
    # Prepare: two rounds to two receivers, then the sender restarts from its state_dict
    out = Outbox(0, build_codec("threshold:0.05"), delta=False, keyframe_every_rounds=1000)
    receivers = {d: Inbound(torch.device("cpu")) for d in (1, 2)}
    model = _model(2)
    for r in range(2):
        model = {k: v * 1.1 for k, v in model.items()}
        for d in receivers:
            receivers[d].decode(_send(out, model, r, d))
    state = out.state_dict()
    restarted = Outbox(0, build_codec("threshold:0.05"), delta=False, keyframe_every_rounds=1000)
    restarted.load_state_dict(state)
    # Execute: the restarted sender's next message to each receiver
    model = {k: v * 1.1 for k, v in model.items()}
    for d in receivers:
        msg = _send(restarted, model, 2, d)
        got = receivers[d].decode(msg)
        # Assert: a plain delta (no keyframe needed), in sequence, within the threshold
        assert not msg.info.get("keyframe") and msg.info["seq"] == 2
        assert max(float((got[k] - model[k]).abs().max()) for k in model) <= 0.05 + 1e-6


def test_threshold_refuses_refresh_and_error_feedback():
    from gossipml.config import ExperimentConfig

    for spec in ("threshold:0.01", "threshold:0.01+delta"):
        with pytest.raises(ConfigError, match="refresh_every_rounds = 0"):
            ExperimentConfig.from_dict({"codec": {"spec": spec},
                                        "peer": {"refresh_every_rounds": 2}})
    with pytest.raises(ConfigError, match="drop '\\+ef'"):
        ExperimentConfig.from_dict({"codec": {"spec": "threshold:0.01+ef"}})
