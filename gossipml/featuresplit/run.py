"""Running a feature-split experiment: one :class:`~gossipml.featuresplit.peer.FeatureSplitPeer` per
block of feature columns, as threads of this process, and the single-machine reference solution
it is checked against (``gossipml run`` with ``[run] mode = "feature_split"``)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import torch

from gossipml.errors import ConfigError
from gossipml.featuresplit.peer import FeatureSplitPeer, objective, train_peer
from gossipml.featuresplit.problem import Problem, load_problem, train_kwargs
from gossipml.featuresplit.process import GRAD_TOL, MAX_FULL_ROUNDS, make_peer
from gossipml.tasks import loss_function

__all__ = ["reference_solution", "run_feature_split"]

log = logging.getLogger("gossipml.featuresplit.run")


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


def run_feature_split(cfg: Any, out: Path, *, max_full_rounds: int = MAX_FULL_ROUNDS,
                      grad_tol: float = GRAD_TOL) -> dict[str, Any]:
    """Train a linear ``[task] model`` split by feature over ``[run] n_peers`` peers (threads of
    this process, one Transport each over ``inproc://``); writes each peer's events under
    ``out`` and returns summary extras: ``final_loss``, ``reference_loss``, ``relative_gap``..."""
    import zmq

    from gossipml.events import events_path

    if cfg.transport.curve_keys_dir:
        raise ConfigError("[transport] curve_keys_dir: gossipml run starts feature-split peers "
                          "as threads over inproc://, which CURVE does not cover; start each "
                          "peer with gossipml peer (a peer file) to use CURVE, or remove "
                          "curve_keys_dir")
    n = cfg.run.n_peers
    torch.set_num_threads(cfg.run.torch_threads)
    prob = load_problem(cfg, n)
    addresses = {i: f"inproc://gossipml-fsplit-{time.monotonic_ns()}-{i}" for i in range(n)}
    out.mkdir(parents=True, exist_ok=True)
    ctx = zmq.Context()
    peers = [make_peer(cfg, prob, i, addresses, context=ctx, events_path=events_path(out, i))
             for i in range(n)]
    t0 = time.monotonic()
    try:
        for p in peers:
            p.transport.start()
        per_peer = [train_kwargs(cfg, prob, blk, max_full_rounds=max_full_rounds,
                                 grad_tol=grad_tol) for blk in prob.blocks]
        results, errors, hung = _run_threads(peers, per_peer, cfg.run.deadline_s)
    finally:
        for p in peers:
            p.close()
        if not any(p.transport.alive for p in peers):
            ctx.term()
    extras: dict[str, Any] = {"mode": "feature_split",
                              "wall_s_training": round(time.monotonic() - t0, 3),
                              "failed_peers": sorted(set(errors) | set(hung)),
                              "errors": {str(k): repr(v) for k, v in errors.items()},
                              "feature_blocks": [[b.start, b.stop] for b in prob.blocks]}
    if extras["failed_peers"]:
        return extras
    return {**extras, **_compare_to_reference(cfg, prob, peers, results)}


def _compare_to_reference(cfg: Any, prob: Problem, peers: list[FeatureSplitPeer],
                          results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    weight = torch.cat([p.weight for p in peers], dim=1)
    bias = peers[0].bias
    loss_fn = loss_function(cfg.task.model, prob.num_classes)
    final_loss = objective(loss_fn, prob.x, prob.y, weight, bias, prob.lam)
    ref_w, ref_b, ref_loss = reference_solution(prob.x, prob.y, prob.outputs, cfg.task.model,
                                                prob.num_classes, prob.lam)
    return dict(final_loss=final_loss, reference_loss=ref_loss,
                relative_gap=(final_loss - ref_loss) / abs(ref_loss),
                weight_distance=float(torch.linalg.vector_norm(
                    torch.cat([(weight - ref_w).flatten(), bias - ref_b]))),
                l2=prob.lam, accuracy=results[0]["accuracy"],
                per_peer=[{"id": i, "features": b.stop - b.start,
                           **{k: results[i][k] for k in ("loss", "rounds", "bytes_sent",
                                                          "bytes_received", "rejected")}}
                          for i, b in enumerate(prob.blocks)])

