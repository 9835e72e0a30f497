"""Running a feature-split experiment: one :class:`~gossipml.featuresplit.peer.FeatureSplitPeer` per
block of feature columns, as threads of this process, and the single-machine reference solution
it is checked against (``gossipml run`` with ``[run] mode = "feature_split"``)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gossipml.featuresplit.peer import FeatureSplitPeer, objective, train_peer
from gossipml.tasks import loss_function

__all__ = ["reference_solution", "run_feature_split"]

log = logging.getLogger("gossipml.featuresplit.peer")


def reference_solution(x: torch.Tensor, y: torch.Tensor, outputs: int, model: str,
                       num_classes: int, lam: float, *, max_iter: int = 2000
                       ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Single-machine minimiser of the same objective: torch L-BFGS (strong Wolfe line search)
    in float64 to a tight tolerance; returns ``(W, b, F(W, b))``."""
    loss_fn = loss_function(model, num_classes)
    w = torch.zeros(outputs, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(outputs, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=50,
                            tolerance_grad=1e-10, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(x @ w.T + b, y) + 0.5 * lam * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()
    return w, b, objective(loss_fn, x, y, w, b, lam)


def _tensors(data: Any) -> tuple[torch.Tensor, ...]:
    """Flattened float64 features and labels (int64) or targets (float64), train and test."""
    def xs(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a.reshape(a.shape[0], -1), dtype=torch.float64)

    def ys(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float64 if data.is_regression else torch.int64)

    return xs(data.x_train), ys(data.y_train), xs(data.x_test), ys(data.y_test)


def _run_threads(peers: list[FeatureSplitPeer], kwargs: list[dict[str, Any]], deadline_s: float
                 ) -> tuple[dict[int, dict[str, Any]], dict[int, BaseException], list[int]]:
    results: dict[int, dict[str, Any]] = {}
    errors: dict[int, BaseException] = {}

    def main(p: FeatureSplitPeer) -> None:
        try:
            results[p.id] = train_peer(p, **kwargs[p.id])
        except BaseException as exc:  # reported as a failed peer
            errors[p.id] = exc
            log.error("feature-split peer %d failed: %s", p.id, exc)

    threads = [threading.Thread(target=main, args=(p,), daemon=True, name=f"fsplit-{p.id}")
               for p in peers]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline_s
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    return results, errors, [i for i, t in enumerate(threads) if t.is_alive()]


def run_feature_split(cfg: Any, out: Path, *, max_full_rounds: int = 5000,
                      grad_tol: float = 1e-6) -> dict[str, Any]:
    """Train a linear ``[task] model`` split by feature over ``[run] n_peers`` peers (threads of
    this process, one Transport each over ``inproc://``); writes each peer's events under
    ``out`` and returns summary extras: ``final_loss``, ``reference_loss``, ``relative_gap``..."""
    import zmq

    from gossipml.data import dataset_for, feature_blocks
    from gossipml.events import events_path
    from gossipml.tasks import LINEAR_MODELS

    if cfg.task.model not in LINEAR_MODELS:
        raise ValueError(f"feature split needs a linear model {list(LINEAR_MODELS)}, got "
                         f"[task] model = {cfg.task.model!r}")
    if cfg.task.schedules_lr:
        raise ValueError("feature split runs SGD at the constant [task] lr (then L-BFGS); leave "
                         "[task] lr_schedule and warmup_steps unset")
    n = cfg.run.n_peers
    torch.set_num_threads(cfg.run.torch_threads)
    data = dataset_for(cfg.data)
    x, y, x_test, y_test = _tensors(data)
    outputs, lam = max(data.num_classes, 1), float(cfg.task.weight_decay)
    blocks = feature_blocks(x.shape[1], n)
    addresses = {i: f"inproc://gossipml-fsplit-{time.monotonic_ns()}-{i}" for i in range(n)}
    out.mkdir(parents=True, exist_ok=True)
    ctx = zmq.Context()
    peers = [FeatureSplitPeer(i, addresses, x[:, blk].contiguous(), y, outputs,
                              model=cfg.task.model, num_classes=data.num_classes, lam=lam,
                              seed=cfg.run.seed, timeout_s=cfg.pacing.timeout_s,
                              transport=cfg.transport, context=ctx,
                              events_path=events_path(out, i)) for i, blk in enumerate(blocks)]
    t0 = time.monotonic()
    try:
        for p in peers:
            p.transport.start()
        kwargs = dict(sgd_steps=cfg.peer.rounds, lr=cfg.task.lr, batch_size=cfg.task.batch_size,
                      max_full_rounds=max_full_rounds, grad_tol=grad_tol,
                      startup_timeout_s=cfg.peer.startup_timeout_s, y_test=y_test)
        per_peer = [dict(kwargs, x_test=x_test[:, blk].contiguous()) for blk in blocks]
        results, errors, hung = _run_threads(peers, per_peer, cfg.run.deadline_s)
    finally:
        for p in peers:
            p.close()
        if not any(p.transport.alive for p in peers):
            ctx.term()
    wall_s = time.monotonic() - t0
    extras: dict[str, Any] = {"mode": "feature_split", "wall_s_training": round(wall_s, 3),
                              "failed_peers": sorted(set(errors) | set(hung)),
                              "errors": {str(k): repr(v) for k, v in errors.items()},
                              "feature_blocks": [[b.start, b.stop] for b in blocks]}
    if extras["failed_peers"]:
        return extras
    weight = torch.cat([p.weight for p in peers], dim=1)
    loss_fn = loss_function(cfg.task.model, data.num_classes)
    final_loss = objective(loss_fn, x, y, weight, peers[0].bias, lam)
    ref_w, ref_b, ref_loss = reference_solution(x, y, outputs, cfg.task.model,
                                                data.num_classes, lam)
    extras.update(final_loss=final_loss, reference_loss=ref_loss,
                  relative_gap=(final_loss - ref_loss) / abs(ref_loss),
                  weight_distance=float(torch.linalg.vector_norm(
                      torch.cat([(weight - ref_w).flatten(), peers[0].bias - ref_b]))),
                  l2=lam, accuracy=results[0]["accuracy"],
                  per_peer=[{"id": i, "features": blocks[i].stop - blocks[i].start,
                             **{k: results[i][k] for k in ("loss", "rounds", "bytes_sent",
                                                            "bytes_received", "rejected")}}
                            for i in range(n)])
    return extras

