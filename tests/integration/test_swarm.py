"""Membership without a server, over real sockets: peers that know one seed find each other."""

from __future__ import annotations

import threading
import time

import torch

from gossipml.config import ExperimentConfig
from gossipml.data import DataConfig
from gossipml.peer import Peer
from gossipml.tasks import TaskConfig, build_task


def _swarm_config(seed_address: str) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "membership": {"enabled": True, "seeds": [seed_address], "shuffle_interval_s": 0.1,
                       "dead_after_s": 3.0, "fanout": 2},
        "pacing": {"mode": "async", "interval_steps": 5, "dead_after_s": 3.0},
        "peer": {"startup_timeout_s": 20.0},
    })


def test_peers_with_one_seed_find_each_other_and_train(loopback_peers, run_threads):
    n = 5
    addresses = loopback_peers(n)
    tasks = [build_task(TaskConfig(model="mlp", lr=0.05), DataConfig(dataset="digits"), i, n, 0)
             for i in range(n)]

    midway = threading.Barrier(n, timeout=60)

    def peer_main(i: int):
        seed = addresses[1] if i == 0 else addresses[0]  # one seed address each
        with Peer(tasks[i].model, _swarm_config(seed), id=i, peers={i: addresses[i]},
                  num_samples=tasks[i].num_samples) as peer:
            assert not peer.wait_for_neighbors()
            for step in range(300):
                tasks[i].train_step()
                peer.step()
                if step == 150:  # everyone is alive here: look at the view
                    midway.wait()
                    time.sleep(1.0)
                    live = peer.swarm.live()
                    midway.wait()
            return tasks[i].evaluate(), live, peer.stats()

    results = run_threads([lambda i=i: peer_main(i) for i in range(n)], 120)
    for i, (final, live, stats) in enumerate(results):
        assert set(live) >= set(range(n)) - {i}, (i, sorted(live))
        assert {j: live[j] for j in live} == {j: addresses[j] for j in live}
        # a model that arrives before its sender's probe is answered is refused (admission,
        # issue #15): nothing else may be
        assert final["accuracy"] > 0.85, (i, final)
        assert set(stats["rejected_by_reason"]) <= {"not_in_view"}, stats["rejected_by_reason"]


def test_a_silent_peer_leaves_the_views(loopback_peers):
    n = 3
    addresses = loopback_peers(n)
    models = [torch.nn.Linear(4, 2) for _ in range(n)]
    cfgs = [_swarm_config(addresses[1] if i == 0 else addresses[0]) for i in range(n)]
    peers = [Peer(models[i], cfgs[i], id=i, peers={i: addresses[i]}).start() for i in range(n)]
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(len(p.swarm.live()) < n - 1 for p in peers):
            time.sleep(0.1)
        assert all(len(p.swarm.live()) == n - 1 for p in peers)
        peers[2].transport.close()  # peer 2 falls silent (no goodbye)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(2 in p.swarm.live() for p in peers[:2]):
            time.sleep(0.1)
        assert all(2 not in p.swarm.live() for p in peers[:2])
        assert all(set(p.swarm.live()) == {1 - p.id} for p in peers[:2]), \
            [p.swarm.live() for p in peers[:2]]
    finally:
        for p in peers:
            p.close()
