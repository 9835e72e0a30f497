"""The inbound side on an in-memory network: every kind routed, every refusal counted, and a
handler that raises contained as ``handler_error``."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gossipml.codecs import build_codec, encode_model
from gossipml.comm.config import TransportConfig
from gossipml.comm.mailbox import Mailbox
from gossipml.comm.memory import MemoryNetwork, MemoryTransport
from gossipml.comm.transport import Outgoing
from gossipml.events import EventLog
from gossipml.peer.exchanged import exchanged_state
from gossipml.peer.inbound import HANDLER_ERROR, InboundSide
from gossipml.peer.outbound import Outbound
from gossipml.peer.rejections import Rejections
from gossipml.peer.stream import Inbound, Outbox
from gossipml.wire import Message, pack, unpack



class Side:
    """Peer 0's inbound side (neighbours 1 and 2, pulls only from 1) and two real senders."""

    def __init__(self, linear_model) -> None:
        self.net = MemoryNetwork()
        self.model = linear_model(0.0)
        self.events = EventLog(None, 0)
        self.rejections = Rejections(0, self.events)
        self.mailbox = Mailbox()
        addresses = {j: f"memory://{j}" for j in (1, 2, 5)}
        port = self.net.transport(0, "memory://0", addresses, TransportConfig(),
                                  lambda s, f: self.side.on_frames(s, f))
        self.outbound = Outbound(0, self.model, port,
                                 Outbox(0, build_codec("identity"), delta=False,
                                        keyframe_every_rounds=10), self.events,
                                 rejections=self.rejections)
        self.side = InboundSide(
            0, mailbox=self.mailbox, decoder=Inbound(torch.device("cpu")),
            rejections=self.rejections, outbound=self.outbound,
            reference=exchanged_state(self.model),
            max_message_bytes=TransportConfig().max_message_bytes,
            peer_ids=frozenset({0, 1, 2}), neighbor_ids=(1,), clock=lambda: 7)
        port.start()
        self.got: dict[int, list[Message]] = {1: [], 2: [], 5: []}
        self.senders = {j: self._sender(j) for j in (1, 2, 5)}

    def _sender(self, j: int) -> MemoryTransport:
        return self.net.transport(
            j, f"memory://{j}", {0: "memory://0"}, TransportConfig(),
            lambda s, f: self.got[j].append(unpack([x.buffer for x in f]))).start()

    def send(self, j: int, msg: Message | list[bytes]) -> None:
        frames = msg if isinstance(msg, list) else pack(msg)
        self.senders[j].submit(Outgoing((0,), lambda: frames))

    def model_msg(self, sender: int, round_: int, fill: float, kind: str = "model",
                  **info: Any) -> Message:
        tensors = {k: torch.full_like(v, fill) for k, v in exchanged_state(self.model).items()}
        items, _ = encode_model(tensors, build_codec("identity"), None)
        return Message(kind=kind, sender=sender, round=round_, tensors=tuple(items), info=info)


@pytest.fixture
def side(linear_model) -> Side:
    return Side(linear_model)


def test_every_kind_is_routed_to_its_handler(side):
    side.send(1, Message(kind="heartbeat", sender=1, round=4, info={"hears": [0]}))
    assert side.mailbox.snapshot()[1] == {1: 4} and side.mailbox.linked(0, {1}) == {1}
    side.send(1, side.model_msg(1, 3, 2.0, num_samples=9))
    held = side.mailbox.at_round(1, 3)
    assert held is not None and held.info["num_samples"] == 9
    assert all(torch.equal(t, torch.full_like(t, 2.0)) for t in held.params.values())
    side.send(1, Message(kind="pull", sender=1, round=0))
    assert [(m.kind, m.round, m.info["pulled"]) for m in side.got[1]] == [("model", 7, True)]
    assert side.outbound.pulls_answered == 1
    side.send(1, Message(kind="ack", sender=1, round=0, info={"shm_release": {"name": "gml-0-1", "gen": 1}}))
    assert side.rejections.total == 0  # every kind above was handled, none refused


def test_a_pull_is_answered_once_and_only_for_a_neighbour(side):
    side.send(1, Message(kind="pull", sender=1, round=0))
    side.send(2, Message(kind="pull", sender=2, round=0))  # a peer, but not one we feed
    assert side.outbound.pulls_answered == 1 and len(side.got[1]) == 1 and not side.got[2]
    assert dict(side.rejections.counts) == {"unknown_sender": 1}


@pytest.mark.parametrize("make, reason", [
    (lambda s: (1, Message(kind="view", sender=1, round=0)), "unexpected_kind"),  # no swarm
    (lambda s: (1, Message(kind="hello", sender=1, round=0)), "unexpected_kind"),
    (lambda s: (1, Message(kind="ack", sender=1, round=0)), "unexpected_kind"),
    (lambda s: (5, Message(kind="heartbeat", sender=5, round=0)), "unknown_sender"),
    (lambda s: (1, Message(kind="heartbeat", sender=2, round=0)), "sender_mismatch"),
    (lambda s: (1, [b"\x93\x01\x02\x03"]), "bad_header"),
    (lambda s: (1, s.model_msg(1, 0, float("nan"))), "nan"),
])
def test_each_bad_message_is_one_counted_refusal(side, make, reason):
    sender, msg = make(side)
    side.send(sender, msg)
    assert dict(side.rejections.counts) == {reason: 1}
    event = side.events.last["rejected"]
    assert event["reason"] == reason and event["sender"] == sender
    assert side.mailbox.snapshot()[0] == {}  # nothing was stored


def test_an_oversized_message_is_refused_as_too_large(side):
    side.side.on_frames(1, [])  # what the transport hands over past max_message_bytes
    assert dict(side.rejections.counts) == {"too_large": 1}


def test_a_codec_the_experiment_does_not_configure_is_refused_before_decoding(side):
    side.side.accepted_codecs = frozenset({"identity"})
    tensors = {k: torch.full_like(v, 1.0) for k, v in exchanged_state(side.model).items()}
    items, _ = encode_model(tensors, build_codec("q8"), None)
    side.send(1, Message(kind="model", sender=1, round=2, tensors=tuple(items)))
    assert dict(side.rejections.counts) == {"codec_not_configured": 1}
    assert side.mailbox.at_round(1, 2) is None and side.mailbox.refused_rounds() == {1: 2}
    side.send(1, side.model_msg(1, 3, 1.0))  # identity: accepted
    assert side.mailbox.at_round(1, 3) is not None and side.rejections.total == 1


def test_a_pull_flood_gets_a_burst_of_answers_sharing_one_copy(side):
    for _ in range(200):
        side.send(1, Message(kind="pull", sender=1, round=0))
    answered = side.outbound.pulls_answered
    assert answered == 4 and len(side.got[1]) == 4  # the burst; the clock (7) does not move
    assert dict(side.rejections.counts) == {"pull_rate": 196}
    assert side.outbound.pull_copies == 1


def test_a_delta_before_any_keyframe_is_a_gap_and_counts_as_delivered(side):
    side.send(1, side.model_msg(1, 2, 1.0, kind="delta", seq=0))
    assert dict(side.rejections.counts) == {"delta_gap": 1}
    assert side.mailbox.refused_rounds() == {1: 2} and side.mailbox.at_round(1, 2) is None


def test_a_handler_that_raises_is_contained_and_the_next_message_handled(side, monkeypatch):
    heard = side.mailbox.heard

    def fails_once(*args, **kwargs):  # a bug below the handler, not bad input (wire checks that)
        monkeypatch.setattr(side.mailbox, "heard", heard)
        raise TypeError("mailbox broke")

    monkeypatch.setattr(side.mailbox, "heard", fails_once)
    side.send(1, Message(kind="heartbeat", sender=1, round=4, info={"hears": [0]}))
    assert dict(side.rejections.counts) == {HANDLER_ERROR: 1}
    assert side.events.last["rejected"]["detail"].startswith("TypeError")
    side.send(1, Message(kind="heartbeat", sender=1, round=6, info={"hears": [0]}))
    assert side.mailbox.snapshot()[1] == {1: 6}
    assert side.rejections.total == 1


def test_a_handler_table_entry_that_raises_anything_is_contained(side):
    def boom(msg: Message) -> None:
        raise RuntimeError(f"broken handler for round {msg.round}")

    side.side.handlers["pull"] = boom
    side.send(1, Message(kind="pull", sender=1, round=3))
    side.send(1, side.model_msg(1, 3, 1.0))
    assert dict(side.rejections.counts) == {HANDLER_ERROR: 1}
    assert side.events.last["rejected"]["detail"] == "RuntimeError: broken handler for round 3"
    assert side.mailbox.at_round(1, 3) is not None


def test_a_swarm_peer_routes_views_to_its_link_and_admits_members_only(linear_model):
    from gossipml.peer.swarm import SwarmLink, SwarmTopology
    from gossipml.policies.membership import MembershipConfig

    side = Side(linear_model)
    swarm = SwarmTopology(MembershipConfig(enabled=True), 0, "tcp://127.0.0.1:9", seed=1)
    port = side.outbound.port
    link = SwarmLink(swarm, port, 0, "tcp://127.0.0.1:9", {}, side.rejections)
    side.side = InboundSide(
        0, mailbox=side.mailbox, decoder=Inbound(torch.device("cpu")),
        rejections=side.rejections, outbound=side.outbound,
        reference=exchanged_state(side.model), max_message_bytes=1 << 20, link=link,
        clock=lambda: 7)
    shuffle = Message(kind="view", sender=5, round=2,
                      info={"entries": [[2, "tcp://127.0.0.2:2", 0.0]], "reply": False,
                            "address": "tcp://127.0.0.5:5"})
    side.send(5, shuffle)  # a stranger at a host that never connected here: not dialled
    side.send(5, side.model_msg(5, 3, 1.0))
    assert swarm.live() == {} and not link.connected and not swarm.candidates()
    assert dict(side.rejections.counts) == {"not_in_view": 2} and not side.got[5]
    assert side.mailbox.snapshot()[0] == {}
    swarm.confirm(5, "tcp://127.0.0.5:5")  # as if 5 had answered a probe
    side.send(5, shuffle)  # a member's shuffle: answered; 2 is only a candidate
    assert set(swarm.live()) == {5} and [c.peer_id for c in swarm.candidates()] == [2]
    assert [(m.kind, m.round, m.info["reply"]) for m in side.got[5]] == [("view", 7, True)]
    side.send(5, side.model_msg(5, 3, 1.0))
    assert side.mailbox.at_round(5, 3) is not None
    side.side.forget(5)  # what the link calls when 5 leaves the view
    assert side.mailbox.snapshot()[0] == {} and side.mailbox.snapshot()[1] == {}
    side.rejections.counts.clear()
    import msgpack  # a hostile view that pack() would refuse to build: the wire refuses it too

    raw = msgpack.packb({"v": 1, "kind": "view", "sender": 5, "round": 2,
                         "info": {"entries": "junk"}, "tensors": []})
    side.send(5, [raw])
    assert dict(side.rejections.counts) == {"bad_info": 1}
