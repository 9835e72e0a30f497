"""A peer's communication state for checkpoints (codec residuals, CHOCO references and stream
positions, ADMM duals, an ensemble's kept neighbour models), read and written on the thread
that owns it."""

from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from gossipml.peer import Peer

__all__ = ["on_comm_thread", "comm_state", "load_comm_state"]


def on_comm_thread(peer: "Peer", fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` run on the peer's communication thread (or here when it is not running); its
    result, or TimeoutError when the thread has not run it within ``timeout_s``."""
    if not peer.transport.alive:
        return fn()
    box: list[Any] = []
    done = threading.Event()

    def run() -> None:
        box.append(fn())
        done.set()

    peer.transport.call(run)
    if not done.wait(timeout_s):
        raise TimeoutError(f"peer {peer.id}: communication thread busy for {timeout_s} s")
    return box[0]


def comm_state(peer: "Peer", timeout_s: float) -> dict[str, Any]:
    """Codec and aggregation state, read on the communication thread so it is consistent."""
    codec = on_comm_thread(peer, lambda: {"out": peer._outbox.state_dict(),
                                          "in": peer._inbound.state_dict()}, timeout_s)
    # a rule registered with register_rule need only aggregate(): no state_dict, nothing kept
    aggregation = getattr(peer.aggregator, "state_dict", dict)()
    return copy.deepcopy({"codec": codec, "aggregation": aggregation})


def load_comm_state(peer: "Peer", state: Mapping[str, Any], timeout_s: float) -> None:
    """Put back what :func:`comm_state` returned (before the first exchange)."""
    codec = state.get("codec") or {}

    def write() -> None:
        if codec.get("out") is not None:
            peer._outbox.load_state_dict(codec["out"])
        if codec.get("in") is not None:
            peer._inbound.load_state_dict(codec["in"])

    on_comm_thread(peer, write, timeout_s)
    load = getattr(peer.aggregator, "load_state_dict", None)
    if load is not None:
        load(state.get("aggregation") or {})
