"""Admission under a flood of strangers: the probe slots are shared fairly."""

from __future__ import annotations

from gossipml.comm.config import TransportConfig
from gossipml.comm.memory import MemoryNetwork
from gossipml.events import EventLog
from gossipml.peer.rejections import Rejections
from gossipml.peer.swarm import SwarmLink, SwarmTopology
from gossipml.policies.membership import MembershipConfig
from gossipml.wire import Message


def _stranger(sender: int, address: str, nonce: int) -> Message:
    return Message(kind="view", sender=sender, round=0,
                   info={"entries": [], "reply": False, "address": address, "nonce": nonce})


def test_invented_ids_at_one_address_take_one_probe_slot_not_all():
    # Prepare: a swarm peer with two probe slots, its port on an in-memory network
    port = MemoryNetwork().transport(0, "memory://0", {}, TransportConfig(), lambda s, f: None)
    port.start()
    swarm = SwarmTopology(MembershipConfig(enabled=True, max_probes=2), 0, "tcp://127.0.0.1:9",
                          seed=1)
    link = SwarmLink(swarm, port, 0, "tcp://127.0.0.1:9", {}, Rejections(0, EventLog(None, 0)))
    # Execute: ten invented ids all claim one dead address on a host that connected here, then
    # an honest stranger at its own address probes this peer
    for sid in range(100, 110):
        msg = _stranger(sid, "tcp://127.0.0.1:7", nonce=sid)
        assert link.admit(msg, "127.0.0.1")
        link.on_view(msg, 0)
    honest = _stranger(50, "tcp://127.0.0.1:8", nonce=1)
    link.admit(honest, "127.0.0.1")
    link.on_view(honest, 0)
    # Assert: one probe went to the shared address; the honest stranger got the other slot
    assert link.dealers == {100, 50}
    assert swarm.ignored().get("probes_busy", 0) == 9
    port.close()
