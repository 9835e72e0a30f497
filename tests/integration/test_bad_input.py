"""A running peer fed garbage over its real socket: every bad message is counted as rejected with
its reason, and the peer keeps training to normal accuracy."""

from __future__ import annotations

import os
import threading
import time

import msgpack
import numpy as np
import torch
import zmq

from gossipml.codecs import build_codec, encode_model
from gossipml.config import ExperimentConfig
from gossipml.data import DataConfig
from gossipml.peer import Peer, exchanged_state
from gossipml.tasks import TaskConfig, build_task
from gossipml.wire import Message, pack


def _valid_frames(model: torch.nn.Module, sender: int = 1) -> list[bytes]:
    items, _ = encode_model(exchanged_state(model), build_codec("identity"), None)
    frames = pack(Message(kind="model", sender=sender, round=0, tensors=tuple(items)))
    return [bytes(memoryview(f)) for f in frames]


def _attacks(model: torch.nn.Module) -> dict[str, list[bytes]]:
    good = _valid_frames(model)
    header = msgpack.unpackb(good[0], raw=False)
    version_key = next(k for k in header if k in ("v", "version"))
    other_version = dict(header, **{version_key: 99})
    # the first tensor replaced by one of another shape, under the same name
    bad_model = {k: torch.zeros(5, 5) if i == 0 else v
                 for i, (k, v) in enumerate(exchanged_state(model).items())}
    items, _ = encode_model(bad_model, build_codec("identity"), None)
    wrong = [bytes(memoryview(f)) for f in pack(Message(kind="model", sender=1, round=0,
                                                        tensors=tuple(items)))]
    return {
        "random bytes": [os.urandom(200)],
        "other version": [msgpack.packb(other_version)] + good[1:],
        "wrong shape": wrong,
        "truncated frame": good[:1] + [good[1][: len(good[1]) // 2]] + good[2:],
        "oversized": [good[0]] + [b"\0" * (600 * 1024)] * 2,
    }


def test_peer_rejects_each_bad_message_and_keeps_training(loopback_peers, run_threads):
    addresses = loopback_peers(2)
    cfg = ExperimentConfig.from_dict({
        "pacing": {"mode": "sync", "timeout_s": 5.0, "interval_steps": 5},
        "peer": {"startup_timeout_s": 10.0},
        "transport": {"max_message_bytes": 1 << 20},
    })
    tasks = [build_task(TaskConfig(model="mlp", lr=0.05), DataConfig(dataset="digits"), i, 2, 0)
             for i in range(2)]
    started, attacked = threading.Event(), threading.Event()

    def peer_main(i: int):
        with Peer(tasks[i].model, cfg, id=i, peers=addresses) as peer:
            peer.wait_for_neighbors()
            for step in range(200):
                tasks[i].train_step()
                peer.step()
                if step == 50:  # mid-training: let the attacker in, then go on
                    started.set()
                    assert attacked.wait(30)
            return tasks[i].evaluate(), dict(peer.rejected), peer.stats()

    def attacker():
        assert started.wait(60)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(addresses[0])
        time.sleep(0.3)
        for frames in _attacks(tasks[0].model).values():
            sock.send_multipart(frames)
        time.sleep(0.5)
        sock.close()
        ctx.term()
        attacked.set()

    (final0, rejected0, stats0), (final1, _, _), _ = run_threads(
        [lambda: peer_main(0), lambda: peer_main(1), attacker], 180)
    assert sum(rejected0.values()) >= 5, rejected0
    assert "bad_version" in rejected0 and "wrong_shape" in rejected0, rejected0
    assert "too_large" in rejected0, rejected0
    assert final0["accuracy"] > 0.85 and final1["accuracy"] > 0.85
    assert stats0["rejected"] == sum(rejected0.values())


def test_nan_model_from_a_neighbour_is_rejected_and_not_merged(loopback_peers, run_threads):
    addresses = loopback_peers(2)
    cfg = ExperimentConfig.from_dict({"pacing": {"mode": "sync", "timeout_s": 5.0},
                                      "peer": {"startup_timeout_s": 10.0}})
    models = [torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)]
    with torch.no_grad():
        models[1].weight.fill_(float("nan"))
    before = models[0].weight.detach().clone()

    def peer_main(i: int):
        with Peer(models[i], cfg, id=i, peers=addresses) as peer:
            peer.wait_for_neighbors(10)
            results = [peer.step() for _ in range(2)]
            return results, dict(peer.rejected)

    (r0, rej0), _ = run_threads([lambda: peer_main(0), lambda: peer_main(1)], 60)
    assert rej0.get("nan", 0) >= 1, rej0
    assert all(r["merged"] == [] for r in r0)
    # a refused model still counts as delivered: the synchronous round does not wait it out
    assert all(r["wait_s"] < 2.5 and r["pace"] == "all_arrived" for r in r0), r0
    assert torch.isfinite(models[0].weight).all()
    assert torch.equal(models[0].weight.detach(), before)
    assert np.isfinite(models[0].bias.detach().numpy()).all()
