"""The peer as a composition, on an in-memory network: heartbeats, goodbye, checkpointable
state, and the summary fields it reports."""

from __future__ import annotations

import collections
import time

import msgpack

import torch

from gossipml.comm.memory import MemoryNetwork

STATS_KEYS = ["bytes_sent", "bytes_received", "messages_sent", "messages_received",
              "send_dropped", "send_failed", "emulated_drops", "heartbeats_sent", "pushes_sent",
              "rejected", "pulls_sent", "pulls_answered", "rejected_by_reason", "send_skipped"]


def test_heartbeats_link_the_peers_and_close_says_goodbye(memory_peers):
    net = MemoryNetwork()
    p0, p1 = memory_peers([0.0, 1.0], {"pacing": {"heartbeat_interval_s": 0.05}}, network=net)
    net.tick()  # each hears the other, but peer 1 does not know peer 0 hears it yet
    assert p0.wait_for_neighbors(0.01) == set() and p1.wait_for_neighbors(0.01) == {0}
    net.tick()  # within the interval: nothing is sent
    assert p0.heartbeats_sent == 1
    time.sleep(0.06)
    net.tick()
    assert p1.wait_for_neighbors(0.01) == set() and p0.heartbeats_sent == 2
    p0.close()
    assert p1.mailbox.snapshot()[3] == {0}  # peer 0 is done: pacing stops waiting for it


def test_comm_state_round_trips_codec_and_stream_positions(memory_peers):
    cfg = {"codec": {"spec": "topk:0.5+delta"}, "pacing": {"mode": "async"}}
    p0, p1, fresh = memory_peers([0.0, 1.0, 0.0], cfg)
    for _ in range(3):
        p0.step()
        p1.step()
    state = p0.comm_state()
    assert state["codec"]["out"]["seq"] == 3 and set(state["codec"]["in"]["copies"]) == {1}
    fresh.load_comm_state(state)
    again = fresh.comm_state()
    assert again["codec"]["out"]["seq"] == 3
    ref, ref0 = again["codec"]["out"]["reference"], state["codec"]["out"]["reference"]
    assert all(torch.equal(ref[k], ref0[k]) for k in ref0)
    assert again["aggregation"] == {}  # a stateless rule keeps nothing


def test_stateful_aggregator_state_goes_through_the_protocol(memory_peers):
    cfg = {"aggregation": {"rule": "output_average", "max_models": 4},
           "pacing": {"mode": "async"}}
    p0, p1 = memory_peers([0.0, 1.0], cfg)
    p1.step()
    p0.step()
    state = p0.comm_state()["aggregation"]
    assert state, "output_average keeps the neighbour models it merged"


def test_stats_report_the_same_fields_as_before(memory_peers):
    p0, p1 = memory_peers([0.0, 1.0], {"pacing": {"mode": "async"}})
    p0.step()
    stats = p0.stats()
    assert list(stats) == STATS_KEYS
    assert stats["pushes_sent"] == 1 and stats["messages_sent"] == 1
    assert p1.stats()["messages_received"] == 1 and p1.stats()["rejected"] == 0



class CountingNetwork(MemoryNetwork):
    """Records the kind of every message sent, by (sender, dest)."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: list[tuple[int, int, str]] = []

    def send(self, sender: int, dest: int, frames: list[bytes]) -> None:
        self.kinds.append((sender, dest, msgpack.unpackb(frames[0])["kind"]))
        super().send(sender, dest, frames)


def test_regular_beats_go_only_to_neighbours_nothing_was_sent_to(memory_peers, tmp_path):
    # Prepare: the path 0 - 1 - 2, linked both ways, so start-up beats are over
    (tmp_path / "path.txt").write_text("0 1\n1 2\n")
    net = CountingNetwork()
    cfg = {"pacing": {"mode": "async", "heartbeat_interval_s": 0.2},
           "topology": {"kind": "edges", "path": str(tmp_path / "path.txt")}}
    p0, p1, p2 = memory_peers([0.0, 1.0, 2.0], cfg, network=net)
    for _ in range(8):
        net.tick()
        time.sleep(0.05)
    assert p1.wait_for_neighbors(0.01) == set() and p1.beats.linked
    net.kinds.clear()
    # Execute: for 0.8 s peer 1 pushes a model to peer 0 every 20 ms, and ticks
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        p1.outbound.publish(p1.rounds.clock, (0,))
        net.tick()
        time.sleep(0.02)
    # Assert: peer 2, sent nothing else, got a beat per interval; peer 0, sent models, none
    from_1 = collections.Counter((d, k) for s, d, k in net.kinds if s == 1)
    assert 3 <= from_1[(2, "heartbeat")] <= 5, from_1
    assert from_1[(0, "heartbeat")] == 0 and from_1[(0, "model")] > 20, from_1


def test_start_up_beats_back_off_while_nobody_answers_and_resume_when_one_does(linear_model):
    # Prepare: peer 0 on a ring of 2 whose neighbour is not there yet
    from gossipml.config import ExperimentConfig
    from gossipml.peer import Peer

    net = MemoryNetwork()
    cfg = ExperimentConfig.from_dict({"pacing": {"heartbeat_interval_s": 5.0,
                                                 "dead_after_s": 20.0}})
    addresses = {0: "memory://0", 1: "memory://1"}
    p0 = Peer(linear_model(0.0), cfg, id=0, peers=addresses, transport_factory=net.transport)
    p0.start()
    p1 = Peer(linear_model(1.0), cfg, id=1, peers=addresses, transport_factory=net.transport)
    try:
        # Execute: tick for 2 s with nobody answering
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            net.tick()
            time.sleep(0.01)
        alone = p0.heartbeats_sent
        # then the neighbour arrives: the two must link at start-up speed again
        p1.start()
        t0 = time.monotonic()
        while (p0.wait_for_neighbors(0.0) or p1.wait_for_neighbors(0.0)) \
                and time.monotonic() - t0 < 3.0:
            net.tick()
            time.sleep(0.01)
        linked_after = time.monotonic() - t0
    finally:
        p1.close()
        p0.close()
    # Assert: 0.1 s, then 1.5x longer each: 6 start-up beats in 2 s (20 without the back-off),
    # plus the regular beat at the start and the one after 5 s / 4; linked within a few beats
    assert 5 <= alone <= 9, alone
    assert linked_after < 0.6, linked_after
