"""Two peers embedded in one program, over real tcp sockets: their parameters move together."""

from __future__ import annotations

import time

import torch

from gossipml.config import ExperimentConfig
from gossipml.peer import Peer


def _config(**tables) -> ExperimentConfig:
    base = {"pacing": {"mode": "sync", "timeout_s": 5.0, "interval_steps": 1},
            "topology": {"kind": "ring"}, "peer": {"startup_timeout_s": 10.0}}
    base.update(tables)
    return ExperimentConfig.from_dict(base)


def test_two_embedded_peers_average_their_parameters(loopback_peers, run_threads):
    torch.manual_seed(0)
    models = [torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)]
    with torch.no_grad():
        models[1].weight.add_(5.0)  # start far apart
    mean0 = (models[0].weight + models[1].weight).detach() / 2
    gap0 = (models[0].weight - models[1].weight).norm().item()
    addresses = loopback_peers(2)
    cfg = _config()

    def peer_main(i: int):
        with Peer(models[i], cfg, id=i, peers=addresses) as peer:
            assert not peer.wait_for_neighbors(10.0)
            rounds = [peer.step() for _ in range(3)]
            return rounds, peer.stats()

    (r0, s0), (r1, s1) = run_threads([lambda: peer_main(0), lambda: peer_main(1)], 60)
    gap = (models[0].weight - models[1].weight).norm().item()
    assert gap < 1e-5 * gap0 + 1e-6, f"parameters did not meet: gap {gap} (was {gap0})"
    assert torch.allclose(models[0].weight, mean0, atol=1e-5)  # uniform weights: the exact mean
    assert all(r["merged"] == [1] for r in r0) and all(r["merged"] == [0] for r in r1)
    assert s0["bytes_sent"] > 0 and s1["bytes_received"] > 0 and s0["rejected"] == 0


def test_embedded_peers_training_on_digits_move_toward_each_other(loopback_peers, run_threads):
    from gossipml.data import DataConfig
    from gossipml.tasks import TaskConfig, build_task

    addresses = loopback_peers(2)
    cfg = _config(pacing={"mode": "sync", "timeout_s": 5.0, "interval_steps": 5})
    # same_init=False: each peer starts from its own random initialisation
    tasks = [build_task(TaskConfig(model="mlp", lr=0.05, same_init=False),
                        DataConfig(dataset="digits"), i, 2, 0) for i in range(2)]

    def distance() -> float:
        return sum((a - b).norm() ** 2 for a, b in
                   zip(tasks[0].model.parameters(), tasks[1].model.parameters())).sqrt().item()

    d0 = distance()

    def peer_main(i: int):
        with Peer(tasks[i].model, cfg, id=i, peers=addresses,
                  num_samples=tasks[i].num_samples) as peer:
            return peer.run(tasks[i], rounds=30)

    finals = run_threads([lambda: peer_main(0), lambda: peer_main(1)], 120)
    assert d0 > 1.0 and distance() < 0.2 * d0, (d0, distance())
    assert all(f["accuracy"] > 0.8 for f in finals)


def test_same_host_peers_move_big_models_through_shared_memory(loopback_peers, run_threads):
    models = [torch.nn.Linear(1024, 512), torch.nn.Linear(1024, 512)]  # 2 MiB of weights
    with torch.no_grad():
        models[0].weight.fill_(1.0)
        models[1].weight.fill_(3.0)
    addresses = loopback_peers(2)
    cfg = _config(transport={"shm": True, "shm_min_bytes": 1 << 20})

    def peer_main(i: int):
        with Peer(models[i], cfg, id=i, peers=addresses) as peer:
            peer.wait_for_neighbors(10.0)
            deadline = time.monotonic() + 10.0  # same host: the probe handshake confirms it
            while 1 - i not in peer.transport.shm_dests and time.monotonic() < deadline:
                time.sleep(0.02)
            results = [peer.step() for _ in range(12)]
        return results, peer.transport.shm_offloaded, dict(peer.rejected)  # after the flush

    (r0, off0, rej0), (r1, off1, rej1) = run_threads([lambda: peer_main(0), lambda: peer_main(1)],
                                                     60)
    # 12 sends through a pool of 6 segments per link: only possible if the receivers release
    # each segment once the model read in place from it is dropped
    assert off0 == 12 and off1 == 12 and not rej0 and not rej1
    assert torch.allclose(models[0].weight, torch.full_like(models[0].weight, 2.0))
    assert torch.equal(models[0].weight, models[1].weight)
