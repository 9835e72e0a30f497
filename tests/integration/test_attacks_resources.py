"""Resource attacks on a running peer (issue #15), over tcp loopback from a raw ZeroMQ DEALER,
while the peer trains with an honest neighbour: each attack is counted with its reason, the
peer's threads stay alive, it merges its neighbour every round, finishes at normal accuracy,
and its memory, its disk and the bytes it sends stay within stated bounds."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
import zmq

from gossipml.codecs import build_codec, encode_model
from gossipml.config import ExperimentConfig
from gossipml.data import DataConfig
from gossipml.events import read_events
from gossipml.peer import Peer, exchanged_state
from gossipml.tasks import TaskConfig, build_task
from gossipml.wire import Message, pack

STEPS, INTERVAL = 200, 5
FLOOD = 10_000  # bad messages
PULLS = 200
EXTRA_CONNECTIONS = 30
EVENTS_BOUND_BYTES = 64_000  # 40 round events (~1 KB) + at most ~20 rejection lines
LOG_BOUND_BYTES = 16_000
RSS_NOISE_BYTES = 8 << 20  # training's own allocations while the attack runs


def _frames(msg: Message) -> list[bytes]:
    return [bytes(memoryview(f)) for f in pack(msg)]


def _dealer(ctx: zmq.Context, address: str, routing_id: bytes) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.setsockopt(zmq.RECONNECT_IVL, 60_000)  # a cut connection stays away
    sock.connect(address)
    return sock


def attack(address: str, model_frames: list[bytes]) -> None:
    """The attacker, in its own process (so the peers' memory is measured alone). It claims to be
    peer 1 (in the clear a routing id is only a claim): 200 pulls, 10,000 garbage messages, one
    model in a codec the experiment does not use, 30 more connections, one 32 MiB frame."""
    ctx = zmq.Context()
    sock = _dealer(ctx, address, b"gml:1:attacker")
    extra = []
    try:
        time.sleep(0.3)  # connected
        pull = _frames(Message(kind="pull", sender=1, round=0))
        for _ in range(PULLS):
            sock.send_multipart(pull)
        for _ in range(FLOOD):
            sock.send_multipart([b"\x93\x01\x02\x03"])  # a msgpack array, not a map
        sock.send_multipart(model_frames)
        for i in range(EXTRA_CONNECTIONS):
            extra.append(_dealer(ctx, address, b"gml:1:extra-%d" % i))
        huge = _dealer(ctx, address, b"gml:1:huge")  # far past the model-sized MAXMSGSIZE:
        huge.send(b"\0" * (32 << 20))  # libzmq drops the connection, reading little of it
        extra.append(huge)
        time.sleep(2.0)  # let peer 0 read all of it
    finally:
        for s in [sock, *extra]:
            s.close(linger=0)
        ctx.term()


def _unconfigured_model(model: torch.nn.Module) -> list[bytes]:
    """A q2 model from "peer 1", of round 0, long past: a refused model must not stand in for a
    round still to come."""
    items, _ = encode_model(exchanged_state(model), build_codec("q2"), None)
    return _frames(Message(kind="model", sender=1, round=0, tensors=tuple(items)))


def _log_file(path: Path) -> Callable[[], None]:
    handler = logging.FileHandler(path)
    logger = logging.getLogger("gossipml.peer.peer")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.WARNING)

    def remove() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old)
        handler.close()

    return remove


def test_resource_attacks_are_bounded_and_training_goes_on(tmp_path, loopback_peers, run_threads,
                                                            rss_bytes):
    # Prepare: two mlp/digits peers, sync; peer 0 writes events and the log to files
    addresses = loopback_peers(2)
    cfg = ExperimentConfig.from_dict({
        "pacing": {"mode": "sync", "timeout_s": 10.0, "interval_steps": INTERVAL},
        "peer": {"startup_timeout_s": 10.0},
        "transport": {"shm": False}})
    tasks = [build_task(TaskConfig(model="mlp", lr=0.05), DataConfig(dataset="digits"), i, 2, 0)
             for i in range(2)]
    events_file, log_path = tmp_path / "peer-0.jsonl", tmp_path / "peer.log"
    remove_log = _log_file(log_path)
    started, attacked = threading.Event(), threading.Event()
    measured: dict[str, Any] = {}

    def peer_main(i: int) -> dict[str, Any]:
        with Peer(tasks[i].model, cfg, id=i, peers=addresses,
                  events_path=str(events_file) if i == 0 else None) as peer:
            peer.wait_for_neighbors()
            rounds = []
            for step in range(STEPS):
                tasks[i].train_step()
                out = peer.step()
                if out is not None:
                    rounds.append(out)
                if i == 0 and step == 50:  # mid-training: the attacks run while it trains on
                    measured["limits"] = peer.transport_config
                    started.set()
                if i == 0 and step == 150:
                    assert attacked.wait(60)
            alive = peer.transport.alive
            stats = peer.stats()
            guard = peer.transport.receiver.guard if i == 0 else None
            copies = peer.outbound.pull_copies
        return {"final": tasks[i].evaluate(), "rounds": rounds, "alive": alive, "stats": stats,
                "guard": guard, "copies": copies}

    def attacker() -> None:
        assert started.wait(60)
        child = multiprocessing.get_context("spawn").Process(
            target=attack, args=(addresses[0], _unconfigured_model(tasks[0].model)))
        try:
            rss0 = rss_bytes()
            child.start()
            child.join(120)
            measured["rss_growth"] = rss_bytes() - rss0
            assert child.exitcode == 0, child.exitcode
        finally:
            if child.is_alive():
                child.kill()
                child.join()
            attacked.set()

    try:
        p0, p1, _ = run_threads([lambda: peer_main(0), lambda: peer_main(1), attacker], 240)
    finally:
        remove_log()

    # Assert: every attack counted with its reason
    rejected = p0["stats"]["rejected_by_reason"]
    assert rejected.get("bad_header") == FLOOD, rejected
    assert rejected.get("codec_not_configured") == 1, rejected
    answered = p0["stats"]["pulls_answered"]
    assert answered + rejected.get("pull_rate", 0) == PULLS, rejected
    assert p0["guard"].cut >= EXTRA_CONNECTIONS - 10
    assert p0["stats"].get("rejected") == sum(rejected.values())
    # pull answers: a burst plus refills, from at most a handful of model copies
    limits = measured["limits"]
    assert answered <= 12 and p0["copies"] <= answered
    answer_bytes = sum(t.numel() * t.element_size()
                       for t in exchanged_state(tasks[0].model).values())
    assert answered * answer_bytes < 12 * limits.max_message_bytes  # not 200 model copies
    # the threads lived; peer 0 merged peer 1 every round and both learned
    assert p0["alive"] and p1["alive"]
    assert len(p0["rounds"]) == STEPS // INTERVAL
    assert all(r["merged"] == [1] for r in p0["rounds"]), [r["merged"] for r in p0["rounds"]]
    assert p0["final"]["accuracy"] > 0.85 and p1["final"]["accuracy"] > 0.85
    # disk: the flood left a few lines; memory: within the stated bound
    assert events_file.stat().st_size < EVENTS_BOUND_BYTES
    rejection_events = [e for e in read_events(events_file)
                        if e["event"] in ("rejected", "rejected_suppressed")]
    assert len(rejection_events) <= 40, len(rejection_events)
    assert log_path.stat().st_size < LOG_BOUND_BYTES
    assert limits.receive_bound_bytes < 64 << 20, limits
    # held bytes <= max_connections x (recv_hwm + 1) x max_message_bytes (~16 MB here); measured
    # growth ~1 MB (a 32 MiB frame accepted whole would show)
    assert measured["rss_growth"] < limits.receive_bound_bytes + RSS_NOISE_BYTES, measured
