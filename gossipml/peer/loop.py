"""The whole training loop of one peer over a task: train, exchange, evaluate, log, checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from gossipml.config import ExperimentConfig
from gossipml.events import EventLog
from gossipml.tasks.optim import reset_after_merge

if TYPE_CHECKING:
    from gossipml.peer.checkpoint import CheckpointManager

__all__ = ["run_task", "checkpoint_manager", "restore", "checkpoint_state", "Runnable",
           "ensemble_metrics", "after_merge"]


class Runnable(Protocol):
    """What the loop uses of a peer (a :class:`~gossipml.peer.peer.Peer` is one): it reads the
    clock and counters and changes them only through ``resume`` and ``set_final_round``."""

    id: int
    n_peers: int
    config: ExperimentConfig
    events: EventLog
    interval_steps: int

    @property
    def clock(self) -> int: ...

    @property
    def local_steps(self) -> int: ...

    def step(self) -> dict[str, Any] | None: ...

    def stats(self) -> dict[str, Any]: ...

    def wait_for_neighbors(self, timeout_s: float | None = None) -> set[int]: ...

    def comm_state(self, timeout_s: float = 10.0) -> dict[str, Any]: ...

    def load_comm_state(self, state: Mapping[str, Any], timeout_s: float = 10.0) -> None: ...

    def resume(self, clock: int, local_steps: int | None = None) -> None: ...

    def set_final_round(self, r: int | None) -> None: ...


def checkpoint_manager(peer: Runnable) -> "CheckpointManager | None":
    """The peer's checkpoints in ``<checkpoint_dir>/peer-<id>/``; None when not configured."""
    cfg = peer.config.peer
    if not cfg.checkpoint_dir:
        return None
    from gossipml.peer.checkpoint import CheckpointManager

    return CheckpointManager(Path(cfg.checkpoint_dir) / f"peer-{peer.id}",
                             max(cfg.checkpoint_every_rounds, 1))


def checkpoint_state(peer: Runnable, task: Any, round_: int) -> dict[str, Any]:
    """What a checkpoint holds: model and optimizer state, the clock and the local step count."""
    state: dict[str, Any] = {"round": round_, "clock": peer.clock, "local_steps": peer.local_steps,
                             "model": task.model.state_dict(), "comm": peer.comm_state()}
    optimizer = getattr(task, "optimizer", None)
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    return state


def restore(peer: Runnable, task: Any, manager: "CheckpointManager") -> int | None:
    """Load the newest checkpoint into the task and the peer; the round it was taken at, or None."""
    found = manager.load_latest()
    if found is None:
        return None
    _, state = found  # files are named by rounds completed; state["round"] is the last one run
    task.model.load_state_dict(state["model"])
    optimizer = getattr(task, "optimizer", None)
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if state.get("comm") is not None:  # codec (EF residuals, CHOCO references), ADMM duals
        peer.load_comm_state(state["comm"])
    clock = int(state["clock"])
    peer.resume(clock, int(state.get("local_steps", clock * peer.interval_steps)))
    return int(state["round"])


def ensemble_metrics(peer: Runnable, task: Any) -> dict[str, Any]:
    """``ensemble_accuracy`` and ``ensemble_members``: the own model and the neighbour models an
    ensemble rule keeps (output_average, vote, distill's teacher), scored on the task's test split
    with the rule's prediction; empty for other rules and for tasks without labelled test data."""
    predictor = getattr(getattr(peer, "aggregator", None), "predictor", None)
    x, y = getattr(task, "x_test", None), getattr(task, "y_test", None)
    if predictor is None or x is None or y is None or y.is_floating_point():
        return {}
    ensemble = predictor(task.model)
    batch_size = getattr(getattr(task, "cfg", None), "eval_batch_size", 512)
    return {"ensemble_accuracy": ensemble.accuracy(x, y, batch_size),
            "ensemble_members": len(ensemble.members)}


def after_merge(peer: Runnable, task: Any, result: Mapping[str, Any]) -> None:
    """Once a round merged models into the parameters, reset optimizer state that the merge made
    wrong (L-BFGS's curvature pairs: :func:`~gossipml.tasks.optim.reset_after_merge`); ensemble
    rules keep the own parameters, so nothing is reset for them."""
    optimizer = getattr(task, "optimizer", None)
    replaces = getattr(getattr(peer, "aggregator", None), "replaces_params", True)
    if optimizer is not None and result.get("merged") and replaces:
        reset_after_merge(optimizer)


def run_task(peer: Runnable, task: Any, rounds: int | None = None) -> dict[str, Any]:
    """Run ``rounds`` rounds of ``interval_steps`` local steps each, exchanging after each round.

    Logs a ``round`` event per round (loss, bytes, merged senders and their staleness, waits) and
    the test accuracy every ``eval_every_rounds`` rounds and at the end (with an ensemble rule,
    the ensemble's too: :func:`ensemble_metrics`); returns the final metrics. After a round that
    merged, optimizer state the merge made wrong is reset (:func:`after_merge`).
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
    peer.set_final_round(rounds - 1)
    if hasattr(task, "set_horizon"):  # the lr schedule spans the whole run
        task.set_horizon(rounds * peer.interval_steps, peer.local_steps if first else None)
    if first < rounds:  # a peer resumed after its last round has nobody to wait for
        peer.wait_for_neighbors()
    metrics: dict[str, Any] = {}
    next_round = first  # a backup peer left behind may skip rounds (Rounds.catch_up)
    # ADMM with the task's prox: the prox is the local optimisation; optimizer steps would move
    # the model off the ADMM iterate, so the loop only counts the round's steps
    solves = getattr(getattr(peer, "aggregator", None), "solves_local_problem", False)
    for r in range(first, rounds):
        if r < next_round:
            continue
        losses = []
        result = None
        factor = emulation.step_factor(peer.id, r, peer.n_peers)
        while result is None:
            t0 = time.perf_counter()
            if not solves:
                losses.append(float(task.train_step()))
            pad_s = emulation.pad_s(factor, time.perf_counter() - t0)
            if pad_s > 0:  # emulate a slower (or a fixed-speed) device
                time.sleep(pad_s)
            result = peer.step()
        after_merge(peer, task, result)
        next_round = r + 1 + int(result.get("skipped_rounds", 0))  # a count (Rounds.catch_up)
        loss = sum(losses) / len(losses) if losses else float(task.train_loss())
        fields: dict[str, Any] = {**result, "loss": loss,
                                  "clock": peer.clock, **peer.stats()}
        optimizer = getattr(task, "optimizer", None)
        if optimizer is not None:  # the learning rate of the round's last step
            fields["lr"] = float(optimizer.param_groups[0]["lr"])
        if first:
            fields["resumed_from"] = first - 1
        if (r + 1) % cfg.eval_every_rounds == 0 or next_round >= rounds:  # or the last run
            metrics = {**task.evaluate(), **ensemble_metrics(peer, task)}
            fields.update(metrics)
        peer.events.emit("round", **fields)
        if manager is not None and cfg.checkpoint_every_rounds:
            manager.maybe_save(r + 1, lambda: checkpoint_state(peer, task, r))  # r+1 rounds done
    if not metrics:  # resumed after the last round: nothing ran, still report the accuracy
        metrics = {**task.evaluate(), **ensemble_metrics(peer, task)}
    final = {**metrics, **peer.stats(), "round": rounds - 1, "rounds": rounds, "clock": peer.clock}
    if first:
        final["resumed_from"] = first - 1
    peer.events.emit("final", **final)
    return final
