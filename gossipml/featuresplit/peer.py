"""Model parallel for linear models, split by feature: peers exchange partial products.

Peer ``p`` of ``P`` owns the feature columns ``feature_blocks(d, P)[p]`` of every training item and
the matching columns ``W_p`` of the weight matrix ``W`` (outputs x features); peer 0 also owns the
bias ``b`` (unregularised). Per round every peer computes its partial product
``z_p = X[idx, block_p] @ W_p^T`` (+ ``b`` on peer 0), a ``[batch, outputs]`` tensor (the
intermediate results, the second kind of content), sends it to every other peer as a wire message
of kind ``"partial"`` through its own :class:`~gossipml.comm.transport.Transport`, and sums all ``P`` of
them in peer-id order, so every peer holds the bit-identical margin ``z = X W^T + b`` and loss
gradient ``G = dL/dz``. Each then updates only its own block: ``grad W_p = G^T X_p + lam W_p``.

Objective (the same on every peer and for the single-machine reference)::

    F(W, b) = mean_i loss(W x_i + b, y_i) + (lam / 2) |W|_F^2,   lam = [task] weight_decay

Schedule: ``[peer] rounds`` minibatch SGD steps (``[task] lr``, ``momentum`` as in
``torch.optim.SGD``: ``v = mu v + g``, ``w -= lr v``, ``batch_size``; every peer draws the same
indices from ``seed + step``), then accelerated full-batch gradient descent (Nesterov with
FISTA momentum and the gradient restart of O'Donoghue & Candes, "Adaptive Restart for Accelerated
Gradient Schemes", 2015) with step ``1 / L``, ``L = c sum_p |X_p|_2^2 / n + lam`` (``c`` = 1/2
for softmax cross-entropy, 1 otherwise), until the gradient norm falls below ``grad_tol``. Scalars
every peer needs (``|W_p|^2``, ``|g_p|^2``, the restart test ``<g_p, dx_p>``, ``|X_p|_2^2``) ride
in the message ``info``, so every peer takes the same decisions with no coordinator.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from gossipml.codecs import build_codec, decode_model, encode_model
from gossipml.codecs.base import CodecError
from gossipml.events import EventLog
from gossipml.comm.addresses import bind_address
from gossipml.comm.config import TransportConfig
from gossipml.tasks import loss_function
from gossipml.comm.transport import Outgoing, Transport
from gossipml.wire import Message, WireError, pack, unpack

__all__ = ["FeatureSplitPeer", "PartialTimeout", "objective", "smoothness", "train_peer"]

log = logging.getLogger("gossipml.featuresplit.peer")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PartialTimeout(TimeoutError):
    """A peer's partial product did not arrive in time."""


def smoothness(model: str) -> float:
    """Curvature bound ``c`` of the loss in the margin: ``|d2 loss / dz2| <= c`` (1/2 for softmax
    cross-entropy, Bohning 1992; 1 for squared error; 1 as a stand-in for the non-smooth hinge)."""
    return 0.5 if model == "logreg" else 1.0


def objective(loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor, lam: float) -> float:
    """``F(W, b) = mean_i loss(W x_i + b, y_i) + lam/2 |W|_F^2`` (the module's objective)."""
    with torch.no_grad():
        return float(loss_fn(x @ weight.T + bias, y)) + 0.5 * lam * float(weight.pow(2).sum())


class _Inbox:
    """Partial products by (round, sender), filled by the communication thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: dict[tuple[int, int], tuple[torch.Tensor, dict[str, Any]]] = {}
        self.hellos: dict[int, dict[str, Any]] = {}

    def put(self, rnd: int, sender: int, z: torch.Tensor, info: dict[str, Any]) -> None:
        with self._cond:
            self._items[(rnd, sender)] = (z, info)
            self._cond.notify_all()

    def hello(self, sender: int, info: dict[str, Any]) -> None:
        with self._cond:
            self.hellos[sender] = info
            self._cond.notify_all()

    def wait(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(ready, timeout_s)

    def take(self, rnd: int, senders: list[int], timeout_s: float) -> dict[int, tuple]:
        """Remove and return round ``rnd`` of every sender; PartialTimeout naming the missing."""
        with self._cond:
            ok = self._cond.wait_for(lambda: all((rnd, j) in self._items for j in senders),
                                     timeout_s)
            if not ok:
                missing = [j for j in senders if (rnd, j) not in self._items]
                raise PartialTimeout(
                    f"round {rnd}: no partial product from peer(s) {missing} after {timeout_s} s; "
                    f"check that those peers are alive, or raise [pacing] timeout_s")
            return {j: self._items.pop((rnd, j)) for j in senders}


class FeatureSplitPeer:
    """One peer of a feature-split linear model: its column block, its weights, its transport."""

    def __init__(self, peer_id: int, addresses: Mapping[int, str], x_block: torch.Tensor,
                 y: torch.Tensor, outputs: int, *, model: str, num_classes: int, lam: float,
                 seed: int, timeout_s: float, transport: TransportConfig,
                 context: Any = None, events_path: str | Path | None = None,
                 bind: str | None = None, curve: Any = None) -> None:
        self.id, self.n_peers = peer_id, len(addresses)
        self.others = [j for j in sorted(addresses) if j != peer_id]
        self.x, self.y = x_block, y
        self.n = int(x_block.shape[0])
        self.lam, self.seed, self.timeout_s = float(lam), int(seed), float(timeout_s)
        self.model = model
        self.loss_fn: LossFn = loss_function(model, num_classes)
        self.weight = torch.zeros(outputs, x_block.shape[1], dtype=x_block.dtype)
        self.bias = torch.zeros(outputs, dtype=x_block.dtype) if peer_id == 0 else None
        self.inbox = _Inbox()
        self.rejected: dict[str, int] = {}
        self.events = EventLog(events_path, peer_id)
        self._codec = build_codec("identity")
        self.transport = Transport(peer_id, bind or bind_address(addresses[peer_id]),
                                   {j: addresses[j] for j in self.others}, transport,
                                   self._on_frames, context=context, curve=curve)

    # ---- communication ------------------------------------------------------------------
    def _on_frames(self, sender_hint: int | None, frames: list) -> None:
        try:
            msg = unpack([f.buffer for f in frames])
            if msg.sender not in self.others or (sender_hint is not None
                                                 and sender_hint != msg.sender):
                raise WireError("unknown_sender", f"sender {msg.sender} (socket {sender_hint})")
            if msg.kind == "hello":
                return self.inbox.hello(msg.sender, dict(msg.info))
            if msg.kind != "partial" or [n for n, _ in msg.tensors] != ["z"]:
                raise WireError("unexpected_kind", f"kind {msg.kind!r} with tensors "
                                f"{[n for n, _ in msg.tensors][:3]}")
            z = decode_model(msg.tensors)["z"].clone()  # own the bytes: the frame is recycled
        except (WireError, CodecError) as exc:
            reason = getattr(exc, "reason", "bad_payload")
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            log.warning("peer %d: rejected a message from %s: %s", self.id, sender_hint, exc)
            return None
        self.inbox.put(msg.round, msg.sender, z, dict(msg.info))
        return None

    def _send(self, msg: Message) -> None:
        self.transport.submit(Outgoing(tuple(self.others), lambda: pack(msg)))

    def handshake(self, timeout_s: float) -> None:
        """Say hello until every peer has heard every other (links up before the first partial);
        shares ``|X_p|_2^2`` (with the bias column on peer 0) for the step size."""
        ones = torch.ones_like(self.x[:, :1])
        aug = self.x if self.bias is None else torch.cat([self.x, ones], 1)
        self.x_sq_norm = float(torch.linalg.matrix_norm(aug, ord=2)) ** 2
        deadline = time.monotonic() + timeout_s
        while True:
            heard_all = set(self.inbox.hellos) >= set(self.others)
            self._send(Message("hello", self.id, 0, info={"heard_all": heard_all,
                                                          "x_sq_norm": self.x_sq_norm}))
            if heard_all and all(self.inbox.hellos[j].get("heard_all") for j in self.others):
                return
            if time.monotonic() > deadline:
                missing = [j for j in self.others if not self.inbox.hellos.get(j, {}).get(
                    "heard_all")]
                raise PartialTimeout(f"peer {self.id}: peers {missing} not ready after "
                                     f"{timeout_s} s; are they running?")
            self.inbox.wait(lambda: False, 0.02)

    def exchange(self, rnd: int, z_own: torch.Tensor, info: dict[str, Any]
                 ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Send ``z_own`` (round ``rnd``) to all, wait for theirs; the sum over peers in id order
        and every peer's ``info`` (in id order, own included)."""
        items, _ = encode_model({"z": z_own.contiguous()}, self._codec, None)
        self._send(Message("partial", self.id, rnd, tuple(items), info))
        got = self.inbox.take(rnd, self.others, self.timeout_s)
        got[self.id] = (z_own, info)
        for j, (z, _) in got.items():
            if z.shape != z_own.shape or z.dtype != z_own.dtype:
                raise ValueError(f"round {rnd}: peer {j} sent a partial product of "
                                 f"{tuple(z.shape)} {z.dtype}, expected {tuple(z_own.shape)} "
                                 f"{z_own.dtype}; every peer must run the same config")
        order = sorted(got)
        total = got[order[0]][0].clone()
        for j in order[1:]:
            total += got[j][0]
        return total, [got[j][1] for j in order]

    # ---- math on this peer's block -------------------------------------------------------
    def partial(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                ) -> torch.Tensor:
        """``x_block @ W_p^T`` (+ ``b`` on peer 0)."""
        z = x @ weight.T
        return z if bias is None else z + bias

    def margin_grad(self, z: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Mean loss at margin ``z`` and its gradient ``dL/dz`` (identical on every peer)."""
        zz = z.detach().requires_grad_(True)
        loss = self.loss_fn(zz, y)
        (grad,) = torch.autograd.grad(loss, zz)
        return float(loss.detach()), grad

    def block_grads(self, x: torch.Tensor, g_z: torch.Tensor, weight: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(G^T X_p + lam W_p, sum_i G_i)``; the bias gradient only on peer 0."""
        gw = g_z.T @ x + self.lam * weight
        return gw, (g_z.sum(0) if self.bias is not None else None)

    def close(self) -> None:
        """Stop the transport and close the event file."""
        self.transport.close()
        self.events.close()


def _emit_round(peer: FeatureSplitPeer, rnd: int, phase: str, loss: float, **extra: Any) -> None:
    s = peer.transport.stats
    peer.events.emit("round", round=rnd, phase=phase, loss=loss, bytes_sent=s.bytes_sent,
                     bytes_received=s.bytes_received, messages_sent=s.messages_sent,
                     send_dropped=s.send_dropped, rejected=sum(peer.rejected.values()), **extra)


def _sgd_phase(peer: FeatureSplitPeer, steps: int, lr: float, momentum: float, batch_size: int,
               log_every: int) -> int:
    """Minibatch SGD with heavy-ball momentum (``torch.optim.SGD``'s form, no dampening); every
    peer draws the same indices from ``(seed, step)``. Returns the rounds taken."""
    b = min(batch_size, peer.n)
    v_w = torch.zeros_like(peer.weight)
    v_b = None if peer.bias is None else torch.zeros_like(peer.bias)
    for step in range(steps):
        idx = torch.as_tensor(np.random.default_rng([peer.seed, step]).choice(peer.n, b, False))
        xb, yb = peer.x[idx], peer.y[idx]
        z, infos = peer.exchange(step, peer.partial(xb, peer.weight, peer.bias),
                                 {"w_sq": float(peer.weight.pow(2).sum())})
        loss, g_z = peer.margin_grad(z, yb)
        gw, gb = peer.block_grads(xb, g_z, peer.weight)
        v_w.mul_(momentum).add_(gw)
        peer.weight -= lr * v_w
        if peer.bias is not None and v_b is not None:
            v_b.mul_(momentum).add_(gb)
            peer.bias -= lr * v_b
        if step % log_every == 0 or step == steps - 1:
            _emit_round(peer, step, "sgd", loss + 0.5 * peer.lam * sum(i["w_sq"] for i in infos))
    return steps


def _full_batch_phase(peer: FeatureSplitPeer, first_round: int, max_rounds: int,
                      grad_tol: float, log_every: int) -> int:
    """Accelerated full-batch gradient descent with delayed gradient restart (module docstring);
    stops, on every peer at the same round, once ``|grad F| < grad_tol``. Returns the next round."""
    x_sq = peer.x_sq_norm + sum(peer.inbox.hellos[j]["x_sq_norm"] for j in peer.others)
    step_size = 1.0 / (smoothness(peer.model) * x_sq / peer.n + peer.lam)
    w_x, b_x = peer.weight.clone(), None if peer.bias is None else peer.bias.clone()
    w_y, b_y = w_x.clone(), None if b_x is None else b_x.clone()
    t_k, g_sq, dot = 1.0, math.inf, 0.0
    rnd = first_round
    for k in range(max_rounds):
        rnd = first_round + k
        info = {"w_sq": float(w_y.pow(2).sum()), "g_sq": g_sq, "dot": dot}
        z, infos = peer.exchange(rnd, peer.partial(peer.x, w_y, b_y), info)
        loss, g_z = peer.margin_grad(z, peer.y)
        obj = loss + 0.5 * peer.lam * sum(i["w_sq"] for i in infos)
        grad_norm = math.sqrt(sum(i["g_sq"] for i in infos))
        if k % log_every == 0 or grad_norm < grad_tol:
            _emit_round(peer, rnd, "full_batch", obj, grad_norm=grad_norm)
        if grad_norm < grad_tol:
            break
        restart = sum(i["dot"] for i in infos) > 0  # the previous step went uphill
        gw, gb = peer.block_grads(peer.x, g_z, w_y)
        w_new = w_y - step_size * gw
        b_new = None if b_y is None else b_y - step_size * gb
        g_sq = float(gw.pow(2).sum()) + (0.0 if gb is None else float(gb.pow(2).sum()))
        dot = float((gw * (w_new - w_x)).sum()) + (
            0.0 if gb is None else float((gb * (b_new - b_x)).sum()))
        t_next = 1.0 if restart else (1 + math.sqrt(1 + 4 * t_k * t_k)) / 2
        beta = 0.0 if restart else (t_k - 1) / t_next
        w_y = w_new + beta * (w_new - w_x)
        b_y = None if b_new is None else b_new + beta * (b_new - b_x)
        w_x, b_x, t_k = w_new, b_new, t_next
    peer.weight, peer.bias = w_x, b_x
    return rnd + 1


def train_peer(peer: FeatureSplitPeer, *, sgd_steps: int, lr: float, momentum: float,
               batch_size: int,
               max_full_rounds: int, grad_tol: float, x_test: torch.Tensor,
               y_test: torch.Tensor, startup_timeout_s: float, log_every: int = 10
               ) -> dict[str, Any]:
    """The whole schedule of one peer, then a last exchange on the training data (final objective)
    and one on the test data (accuracy); logs ``round`` events and a ``final`` event."""
    peer.handshake(startup_timeout_s)
    peer.events.emit("start", neighbors=peer.others)
    rnd = _sgd_phase(peer, sgd_steps, lr, momentum, batch_size, log_every)
    rnd = _full_batch_phase(peer, rnd, max_full_rounds, grad_tol, log_every)
    z, infos = peer.exchange(rnd, peer.partial(peer.x, peer.weight, peer.bias),
                             {"w_sq": float(peer.weight.pow(2).sum())})
    train_loss = float(peer.loss_fn(z, peer.y))
    final_obj = train_loss + 0.5 * peer.lam * sum(i["w_sq"] for i in infos)
    z_test, _ = peer.exchange(rnd + 1, peer.partial(x_test, peer.weight, peer.bias), {})
    acc = (None if y_test.is_floating_point()
           else float((z_test.argmax(1) == y_test).double().mean()))
    s = peer.transport.stats
    final = {"loss": final_obj, "train_loss": train_loss, "test_loss":
             float(peer.loss_fn(z_test, y_test)), "accuracy": acc, "rounds": rnd + 2,
             "bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
             "messages_sent": s.messages_sent, "rejected": sum(peer.rejected.values())}
    peer.events.emit("final", **final)
    return final
