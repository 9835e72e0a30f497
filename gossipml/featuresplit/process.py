"""One feature-split peer built from an experiment config (:func:`make_peer`), and one run as
this whole process: what ``gossipml peer`` runs for ``[run] mode = "feature_split"`` (and so
``gossipml launch``, Slurm and Kubernetes, which start ``gossipml peer`` on every host)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from gossipml.errors import ConfigError
from gossipml.featuresplit.peer import FeatureSplitPeer, train_peer
from gossipml.featuresplit.problem import Problem, load_problem, train_kwargs

__all__ = ["make_peer", "run_peer_process", "MAX_FULL_ROUNDS", "GRAD_TOL"]

log = logging.getLogger("gossipml.featuresplit.process")

#: the full-batch phase stops at |grad F| < GRAD_TOL, or after MAX_FULL_ROUNDS rounds
MAX_FULL_ROUNDS = 5000
GRAD_TOL = 1e-6


def make_peer(cfg: Any, problem: Problem, peer_id: int, addresses: Mapping[int, str], *,
              context: Any = None, events_path: str | Path | None = None,
              bind: str | None = None, curve: Any = None) -> FeatureSplitPeer:
    """The peer of block ``peer_id`` (its columns of the training data) with ``cfg``'s keys."""
    block = problem.blocks[peer_id]
    return FeatureSplitPeer(peer_id, addresses, problem.x[:, block].contiguous(), problem.y,
                            problem.outputs, model=cfg.task.model,
                            num_classes=problem.num_classes, lam=problem.lam, seed=cfg.run.seed,
                            timeout_s=cfg.pacing.timeout_s, transport=cfg.transport,
                            context=context, events_path=events_path, bind=bind, curve=curve)


def run_peer_process(cfg: Any, peer_id: int, addresses: Mapping[int, str], *,
                     events_path: str | Path, bind: str | None = None,
                     device: str | None = None) -> dict[str, Any]:
    """Train block ``peer_id`` of ``len(addresses)`` with the other peers (processes anywhere)
    and return its ``final`` event; the events go to ``events_path`` as in ``gossipml run``."""
    import torch
    import zmq

    from gossipml.comm.security import curve_for

    if cfg.run.mode != "feature_split":
        raise ConfigError(f"run_peer_process runs feature split, got [run] mode = "
                          f"{cfg.run.mode!r}")
    if device not in (None, "auto", "cpu"):
        raise ConfigError(f"the peer file gives peer {peer_id} device {device!r}, but feature "
                          "split computes on the CPU in float64: drop device from the peer file")
    if sorted(addresses) != list(range(len(addresses))) or peer_id not in addresses:
        raise ConfigError(f"peer ids must be 0..n-1 and include {peer_id}, got "
                          f"{sorted(addresses)}")
    torch.set_num_threads(cfg.run.torch_threads)
    problem = load_problem(cfg, len(addresses))
    Path(events_path).parent.mkdir(parents=True, exist_ok=True)
    context = zmq.Context()
    curve = curve_for(cfg, peer_id, context)  # the ZAP handler runs before the ROUTER binds
    try:
        peer = make_peer(cfg, problem, peer_id, addresses, context=context,
                         events_path=events_path, bind=bind, curve=curve)
        try:
            peer.transport.start()
            return train_peer(peer, **train_kwargs(
                cfg, problem, problem.blocks[peer_id], max_full_rounds=MAX_FULL_ROUNDS,
                grad_tol=GRAD_TOL))
        finally:
            peer.close()
    finally:
        if curve is not None:
            curve.stop()
        context.term()
