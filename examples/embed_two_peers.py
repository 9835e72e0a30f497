"""Two gossipml peers embedded in one program, each in its own training loop on its own thread.

Each peer trains an MLP on half of scikit-learn's digits and calls ``peer.step()`` after every
optimizer step; every 5 steps the peers swap models over tcp loopback and average them.
Run: ``python examples/embed_two_peers.py``.
"""

from __future__ import annotations

import threading

import torch

from gossipml.config import ExperimentConfig
from gossipml.data import DataConfig
from gossipml.peer import Peer
from gossipml.comm.addresses import free_ports
from gossipml.tasks import TaskConfig, build_task


def train(peer_id: int, peers: dict[int, str], results: dict[int, float]) -> None:
    task = build_task(TaskConfig(model="mlp", lr=0.05), DataConfig(dataset="digits"), peer_id, 2, 0)
    config = ExperimentConfig.from_dict({"pacing": {"mode": "sync", "interval_steps": 5}})
    with Peer(task.model, config, id=peer_id, peers=peers, num_samples=task.num_samples) as peer:
        peer.wait_for_neighbors(timeout_s=10)
        for _ in range(300):  # your own loop: any model, any optimizer
            task.train_step()
            peer.step()
        results[peer_id] = task.evaluate()["accuracy"]


def main() -> None:
    torch.set_num_threads(1)
    peers = {i: f"tcp://127.0.0.1:{port}" for i, port in enumerate(free_ports(2))}
    results: dict[int, float] = {}
    threads = [threading.Thread(target=train, args=(i, peers, results)) for i in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, acc in sorted(results.items()):
        print(f"peer {i}: test accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
