"""An existing training loop, one line changed: the optimizer is wrapped in ``GossipOptimizer``.

Two peers, each on its own thread with its own half of scikit-learn's digits, train a small MLP
with a plain PyTorch loop; every 5 optimizer steps the peers swap models over tcp loopback and
average them. Run: ``python examples/gossip_optimizer.py``.
"""

from __future__ import annotations

import threading

import torch

from gossipml.comm.addresses import free_ports
from gossipml.config import ExperimentConfig
from gossipml.data import DataConfig, load_dataset, partition_indices
from gossipml.peer import GossipOptimizer, Peer


def train(peer_id: int, peers: dict[int, str], results: dict[int, float]) -> None:
    data = load_dataset("digits")
    mine = partition_indices(data.y_train, 2, DataConfig())[peer_id]
    x = torch.as_tensor(data.x_train[mine], dtype=torch.float32).flatten(1)
    y = torch.as_tensor(data.y_train[mine])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10))
    config = ExperimentConfig.from_dict({"pacing": {"mode": "sync", "interval_steps": 5}})
    with Peer(model, config, id=peer_id, peers=peers, num_samples=len(y)) as peer:
        peer.wait_for_neighbors(timeout_s=10)
        optimizer = GossipOptimizer(torch.optim.SGD(model.parameters(), lr=0.05), peer)  # the line
        gen = torch.Generator().manual_seed(peer_id)
        for _ in range(300):  # the loop a program already had
            batch = torch.randint(0, len(y), (32,), generator=gen)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    x_test = torch.as_tensor(data.x_test, dtype=torch.float32).flatten(1)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == torch.as_tensor(data.y_test)).float().mean()
    results[peer_id] = float(accuracy)


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
