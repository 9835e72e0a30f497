"""One peer: :class:`~gossipml.peer.peer.Peer` composes the parts it owns (rounds on the training
thread, inbound and outbound on the communication thread) and the loop that runs a task.

``from gossipml.peer import Peer`` works, lazily: importing this package (for ``PeerConfig``, say)
imports neither torch nor zmq.
"""

from __future__ import annotations

__all__ = ["Peer", "exchanged_state"]


def __getattr__(name: str):
    if name in __all__:
        from gossipml.peer import peer

        return getattr(peer, name)
    raise AttributeError(f"module 'gossipml.peer' has no attribute {name!r}")
