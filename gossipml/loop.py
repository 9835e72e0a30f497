"""The whole training loop of one peer over a task: train, exchange, evaluate, log."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gossipml.peer import Peer

__all__ = ["run_task"]


def run_task(peer: "Peer", task: Any, rounds: int | None = None) -> dict[str, Any]:
    """Run ``rounds`` rounds of ``interval_steps`` local steps each, exchanging after each round.

    Logs a ``round`` event per round (loss, bytes, merged senders and their staleness, waits) and
    the test accuracy every ``eval_every_rounds`` rounds and at the end; returns the final metrics.
    """
    cfg = peer.config.peer
    rounds = cfg.rounds if rounds is None else rounds
    slowdown = peer.config.emulation.slowdown(peer.id)
    peer.wait_for_neighbors()
    metrics: dict[str, Any] = {}
    for r in range(rounds):
        losses = []
        result = None
        while result is None:
            t0 = time.perf_counter()
            losses.append(float(task.train_step()))
            if slowdown > 1.0:  # emulate a slower device: stretch the step's own time
                time.sleep((slowdown - 1.0) * (time.perf_counter() - t0))
            result = peer.step()
        fields: dict[str, Any] = {**result, "loss": sum(losses) / len(losses),
                                  "clock": peer.clock, **peer.stats()}
        if (r + 1) % cfg.eval_every_rounds == 0 or r == rounds - 1:
            metrics = dict(task.evaluate())
            fields.update(metrics)
        peer.events.emit("round", **fields)
    final = {**metrics, **peer.stats(), "round": rounds - 1, "rounds": rounds, "clock": peer.clock}
    peer.events.emit("final", **final)
    return final
