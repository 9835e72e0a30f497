"""gossipml: decentralized (gossip) learning over ZeroMQ, with no server.

Each peer trains its own copy of a model on its own data and, from time to time, exchanges a
(compressed) copy with a few neighbours, then merges what it received. Nothing here runs at import
time; import the parts you need, e.g. ``from gossipml.peer import Peer``.
"""

from __future__ import annotations

__all__ = ["__version__", "Peer", "ExperimentConfig", "load_experiment"]

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing gossipml must not import torch or zmq
    if name == "Peer":
        from gossipml.peer import Peer

        return Peer
    if name in ("ExperimentConfig", "load_experiment"):
        from gossipml import config

        return getattr(config, name)
    raise AttributeError(f"module 'gossipml' has no attribute {name!r}")
