"""Clocks and sequence numbers from others are believed only within a window: a forged round or
seq is a counted refusal that changes nothing, and the real sender is still heard."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gossipml.codecs import build_codec, encode_model
from gossipml.comm.transport import Outgoing
from gossipml.peer.stream import SEQ_WINDOW, BadSeq, DeltaGap, Inbound, Outbox
from gossipml.wire import Message, pack, unpack

HUGE = 2**62 - 1
SYNC = {"pacing": {"mode": "sync", "timeout_s": 2.0}}


def _forge(peer, dest: int, msg: Message) -> None:
    """Send ``msg`` through ``peer``'s own port (as a forger using its id would)."""
    peer.transport.submit(Outgoing((dest,), lambda: pack(msg)))


def _model_msg(peer, round_: int) -> Message:
    """``peer``'s current model as a plain (identity-coded) model message of ``round_``."""
    items, _ = encode_model({k: v.detach() for k, v in peer.model.state_dict().items()},
                            build_codec("identity"), None)
    return Message("model", peer.id, round_, tuple(items))


def test_a_forged_huge_heartbeat_or_model_round_is_refused_and_changes_nothing(memory_peers):
    # Prepare: a sync pair; peer 1 has said its clock is 0
    p0, p1 = memory_peers([0.0, 1.0], SYNC)
    _forge(p1, 0, Message("heartbeat", 1, 0, info={"hears": [0]}))
    before = p0.mailbox.snapshot()
    # Execute: a heartbeat and a model claiming round 2**62 - 1, from peer 1's id
    _forge(p1, 0, Message("heartbeat", 1, HUGE, info={"hears": [0]}))
    _forge(p1, 0, _model_msg(p1, HUGE))
    _forge(p1, 0, _model_msg(p1, 3))  # sync believes at most 2 ahead of clock 0
    # Assert: three counted refusals; no clock, no model stored
    assert dict(p0.rejected) == {"round_out_of_window": 3}
    after = p0.mailbox.snapshot()
    assert after[0] == before[0] == {} and after[1] == before[1] == {1: 0}
    assert p0.mailbox.refused_rounds() == {}
    # and the real sender is merged at once in the next round
    p1.outbound.publish(0, (0,))
    out = p0.exchange()
    assert out["merged"] == [1] and out["pace"] == "all_arrived"


def test_catch_up_on_forged_clocks_is_bounded_by_the_run_and_never_lists_rounds(memory_peers):
    # Prepare: backup with catch-up, k = 1 of 2, a run of 10 rounds
    cfg = {"topology": {"kind": "full"},
           "pacing": {"mode": "backup", "backup_k": 1, "backup_catch_up": True,
                      "interval_steps": 2, "timeout_s": 0.2}}
    p0, p1, p2 = memory_peers([0.0, 1.0, 1.0], cfg)
    p0.set_final_round(9)
    # Execute: both neighbours' ids claim clock 2**62 - 1 (beyond any window), then 11 (past
    # the run's last clock, 10)
    for j, p in ((1, p1), (2, p2)):
        _forge(p, 0, Message("heartbeat", j, HUGE, info={"hears": [0]}))
        _forge(p, 0, Message("heartbeat", j, 11, info={"hears": [0]}))
    # Assert: refused; the peer steps as usual (no jump, no MemoryError)
    assert dict(p0.rejected) == {"round_out_of_window": 4}
    assert p0.step() is None and p0.clock == 0
    # Execute: clock 10, the run's end, is believed: the jump goes there and no further
    _forge(p1, 0, Message("heartbeat", 1, 10, info={"hears": [0]}))
    out = p0.step()  # step 2: round 0 runs (timing out), then the catch-up
    # Assert: the skipped rounds are a count from a first round, the clock at the run's end
    assert out["round"] == 0 and out["skipped_rounds"] == 9 and out["skipped_from"] == 1
    assert p0.clock == 10


def _stream(n: int) -> tuple[Outbox, list[Message]]:
    """A delta stream of ``n`` messages (keyframe at round 0 only) from peer 1."""
    out = Outbox(1, build_codec("topk:0.5"), delta=True, keyframe_every_rounds=1000)
    g = torch.Generator().manual_seed(0)
    msgs = []
    for r in range(n):
        msgs.append(unpack(out.frames({"w": torch.randn(16, generator=g)}, r, {})))
    return out, msgs


def _with_seq(msg: Message, seq: Any, **info: Any) -> Message:
    return Message(msg.kind, msg.sender, msg.round, msg.tensors, {**msg.info, "seq": seq, **info})


@pytest.mark.parametrize("forged", [10**9, -100, 3 + SEQ_WINDOW + 1, "7", True, None, 2.0])
def test_a_forged_far_or_mistyped_seq_is_bad_seq_and_the_real_stream_goes_on(forged):
    # Prepare: a receiver synced on the keyframe and two deltas
    out, msgs = _stream(5)
    inbound = Inbound(torch.device("cpu"))
    for m in msgs[:3]:
        inbound.decode(m)
    state = inbound.state_dict()
    # Execute: a copy of the next delta with a forged seq
    with pytest.raises(BadSeq):
        inbound.decode(_with_seq(msgs[3], forged))
    # Assert: nothing changed; the real deltas still apply and match the sender's reference
    assert inbound.state_dict()["next_seq"] == state["next_seq"]
    assert inbound.state_dict()["synced"] == state["synced"]
    inbound.decode(msgs[3])
    x_hat = inbound.decode(msgs[4])
    assert torch.equal(x_hat["w"], out.state_dict()["reference"]["w"])


def test_a_near_seq_is_a_gap_and_a_keyframe_with_any_seq_resyncs():
    out, msgs = _stream(4)
    inbound = Inbound(torch.device("cpu"))
    inbound.decode(msgs[0])
    with pytest.raises(DeltaGap):  # two lost: plausible, so the stream waits for a keyframe
        inbound.decode(msgs[3])
    keyframe = _with_seq(msgs[0], 10**12)  # the real keyframe, renumbered
    assert torch.equal(inbound.decode(keyframe)["w"], inbound.decode(msgs[0])["w"])
    assert inbound.state_dict()["next_seq"] == {1: 1} and inbound.state_dict()["synced"] == [1]


def test_bad_seq_is_counted_and_not_taken_as_a_delivered_round(memory_peers):
    p0, p1 = memory_peers([0.0, 1.0], {**SYNC, "codec": {"content": "delta"}})
    p1.outbound.publish(0, (0,))  # the keyframe: peer 0 is synced on peer 1's stream
    assert p0.mailbox.at_round(1, 0) is not None
    frames = p1.outbound.encoder.frames(
        {k: v.detach().clone() for k, v in p1.model.state_dict().items()}, 1, {})
    _forge(p1, 0, _with_seq(unpack(frames), 10**9))
    assert dict(p0.rejected) == {"bad_seq": 1}
    assert p0.mailbox.refused_rounds() == {}  # the pacing does not count it as peer 1's round


def test_a_resumed_peer_believes_neighbours_far_ahead_until_it_is_back_in_step(memory_peers):
    # Prepare: a sync pair; peer 0 restarts from a round-5 checkpoint while peer 1 went on
    p0, p1 = memory_peers([0.0, 1.0], SYNC)
    p0.resume(5)
    # Execute / Assert: peer 1's round-20 model is believed (sync alone would refuse it) ...
    p1.outbound.publish(20, (0,))
    assert dict(p0.rejected) == {} and p0.mailbox.at_round(1, 20) is not None
    out = p0.exchange()  # ... and merged: the rejoining peer takes the newer parameters
    assert out["merged"] == [1] and out["staleness"] == [-15] and p0.rounds.rejoining
    # once a round merges a model within the window, the sync window is back
    p1.outbound.publish(6, (0,))
    assert p0.exchange()["staleness"] == [0] and not p0.rounds.rejoining
    _forge(p1, 0, _model_msg(p1, 40))
    assert dict(p0.rejected) == {"round_out_of_window": 1}
