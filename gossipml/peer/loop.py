"""The whole training loop of one peer over a task: train, exchange, evaluate, log, checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gossipml.peer.checkpoint import CheckpointManager
    from gossipml.peer import Peer

__all__ = ["run_task", "checkpoint_manager", "restore", "checkpoint_state"]


def checkpoint_manager(peer: "Peer") -> "CheckpointManager | None":
    """The peer's checkpoints in ``<checkpoint_dir>/peer-<id>/``; None when not configured."""
    cfg = peer.config.peer
    if not cfg.checkpoint_dir:
        return None
    from gossipml.peer.checkpoint import CheckpointManager

    return CheckpointManager(Path(cfg.checkpoint_dir) / f"peer-{peer.id}",
                             max(cfg.checkpoint_every_rounds, 1))


def checkpoint_state(peer: "Peer", task: Any, round_: int) -> dict[str, Any]:
    """What a checkpoint holds: model and optimizer state, the clock and the local step count."""
    state: dict[str, Any] = {"round": round_, "clock": peer.clock, "local_steps": peer.local_steps,
                             "model": task.model.state_dict(), "comm": peer.comm_state()}
    optimizer = getattr(task, "optimizer", None)
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    return state


def restore(peer: "Peer", task: Any, manager: "CheckpointManager") -> int | None:
    """Load the newest checkpoint into the task and the peer; the round it was taken at, or None."""
    found = manager.load_latest()
    if found is None:
        return None
    _, state = found  # files are named by rounds completed; state["round"] is the last one run
    task.model.load_state_dict(state["model"])
    optimizer = getattr(task, "optimizer", None)
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    peer.clock = int(state["clock"])
    if state.get("comm") is not None:  # codec (EF residuals, CHOCO references), ADMM duals
        peer.load_comm_state(state["comm"])
    peer.local_steps = int(state.get("local_steps", peer.clock * peer.interval_steps))
    return int(state["round"])


def run_task(peer: "Peer", task: Any, rounds: int | None = None) -> dict[str, Any]:
    """Run ``rounds`` rounds of ``interval_steps`` local steps each, exchanging after each round.

    Logs a ``round`` event per round (loss, bytes, merged senders and their staleness, waits) and
    the test accuracy every ``eval_every_rounds`` rounds and at the end; returns the final metrics.
    With ``[peer] checkpoint_dir`` set, it resumes from the newest checkpoint (running only the
    rounds left; the ``start`` of a resumed run is preceded by a ``resumed`` event) and saves one
    every ``checkpoint_every_rounds`` rounds.
    """
    cfg = peer.config.peer
    rounds = cfg.rounds if rounds is None else rounds
    emulation = peer.config.emulation
    manager = checkpoint_manager(peer)
    first = 0
    if manager is not None:
        resumed = restore(peer, task, manager)
        if resumed is not None:
            first = resumed + 1
            peer.events.emit("resumed", resumed_from=resumed, clock=peer.clock,
                             rounds_left=max(rounds - first, 0))
    peer.final_round = rounds - 1
    if hasattr(task, "set_horizon"):  # the lr schedule spans the whole run
        task.set_horizon(rounds * peer.interval_steps, peer.local_steps if first else None)
    if first < rounds:  # a peer resumed after its last round has nobody to wait for
        peer.wait_for_neighbors()
    metrics: dict[str, Any] = {}
    next_round = first  # a backup peer left behind may skip rounds (Peer._catch_up)
    for r in range(first, rounds):
        if r < next_round:
            continue
        losses = []
        result = None
        factor = emulation.step_factor(peer.id, r, peer.n_peers)
        while result is None:
            t0 = time.perf_counter()
            losses.append(float(task.train_step()))
            pad_s = emulation.pad_s(factor, time.perf_counter() - t0)
            if pad_s > 0:  # emulate a slower (or a fixed-speed) device
                time.sleep(pad_s)
            result = peer.step()
        next_round = r + 1 + len(result.get("skipped_rounds", ()))
        fields: dict[str, Any] = {**result, "loss": sum(losses) / len(losses),
                                  "clock": peer.clock, **peer.stats()}
        optimizer = getattr(task, "optimizer", None)
        if optimizer is not None:  # the learning rate of the round's last step
            fields["lr"] = float(optimizer.param_groups[0]["lr"])
        if first:
            fields["resumed_from"] = first - 1
        if (r + 1) % cfg.eval_every_rounds == 0 or next_round >= rounds:  # or the last run
            metrics = dict(task.evaluate())
            fields.update(metrics)
        peer.events.emit("round", **fields)
        if manager is not None and cfg.checkpoint_every_rounds:
            manager.maybe_save(r + 1, lambda: checkpoint_state(peer, task, r))  # r+1 rounds done
    if not metrics:  # resumed after the last round: nothing ran, still report the accuracy
        metrics = dict(task.evaluate())
    final = {**metrics, **peer.stats(), "round": rounds - 1, "rounds": rounds, "clock": peer.clock}
    if first:
        final["resumed_from"] = first - 1
    peer.events.emit("final", **final)
    return final
