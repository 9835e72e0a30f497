"""One peer: :class:`~gossipml.peer.peer.Peer` composes the parts it owns (rounds on the training
thread, inbound and outbound on the communication thread) and the loop that runs a task.

``from gossipml.peer import Peer`` works, lazily: importing this package (for ``PeerConfig``, say)
imports neither torch nor zmq.
"""

from __future__ import annotations

__all__ = ["Peer", "exchanged_state", "GossipOptimizer"]


def __getattr__(name: str):
    if name == "Peer":
        from gossipml.peer.peer import Peer

        return Peer
    if name == "exchanged_state":
        from gossipml.peer.exchanged import exchanged_state

        return exchanged_state
    if name == "GossipOptimizer":
        from gossipml.peer.optim import GossipOptimizer

        return GossipOptimizer
    raise AttributeError(f"module 'gossipml.peer' has no attribute {name!r}")
