"""Issue #15 over real sockets: membership admits only peers that prove their id at their address.

An attacker in the clear invents ids, sends their models, heartbeats and probes, and names a
forged address (a listening socket this test owns on another loopback IP); another attacker joins
honestly and then names 1,024 invented ids in its shuffles and probes under as many ids.
"""

from __future__ import annotations

import copy
import os
import socket
import threading
import time
from typing import Any

import torch
import zmq

from gossipml.codecs import build_codec, encode_model
from gossipml.comm.addresses import free_ports
from gossipml.comm.sockets import routing_id
from gossipml.config import ExperimentConfig
from gossipml.data import DataConfig
from gossipml.peer import Peer
from gossipml.peer.exchanged import exchanged_state
from gossipml.tasks import TaskConfig, build_task
from gossipml.wire import Message, pack, unpack

VIEW_SIZE = 8


def _config(seed_address: str, rule: str = "mean") -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "membership": {"enabled": True, "seeds": [seed_address], "shuffle_interval_s": 0.1,
                       "dead_after_s": 3.0, "fanout": 2, "view_size": VIEW_SIZE,
                       "shuffle_size": 4, "probe_timeout_s": 0.5},
        "pacing": {"mode": "async", "interval_steps": 5, "dead_after_s": 3.0},
        "aggregation": {"rule": rule},
        "transport": {"shm": False},
        "peer": {"startup_timeout_s": 20.0},
    })


def _dealer(ctx: zmq.Context, claimed_id: int, address: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, routing_id(claimed_id))  # what an honest peer presents
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def _poison(model: torch.nn.Module, sender: int, round_: int) -> list:
    tensors = {k: torch.full_like(v, 1e3) for k, v in exchanged_state(model).items()}
    items, _ = encode_model(tensors, build_codec("identity"), None)
    return pack(Message(kind="model", sender=sender, round=round_, tensors=tuple(items),
                        info={"num_samples": 10**6}))


def _view(sender: int, address: str, entries: list, **extra: Any) -> list:
    info = {"entries": entries, "reply": False, "address": address, **extra}
    return pack(Message(kind="view", sender=sender, round=0, info=info))


def _forged_listener() -> socket.socket:
    """A plain TCP listener on 127.0.0.2: no peer runs there and no honest peer ever connected
    from there; any connection it receives was made to a forged address."""
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen(64)
    listener.setblocking(False)
    return listener


def _connections(listener: socket.socket) -> int:
    got = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return got
        conn.close()
        got += 1


def _attack(targets: dict[int, str], model: torch.nn.Module, forged: str, dead: str,
            stop: threading.Event) -> None:
    """50 invented ids: each sends heartbeats, probes, shuffles of invented entries and poisoned
    models to every honest peer, claiming the forged address (or a dead port on our host)."""
    ctx = zmq.Context()
    try:
        ids = range(5000, 5050)
        socks = {(i, j): _dealer(ctx, i, a) for i in ids for j, a in targets.items()}
        invented = [[6000 + k, forged, 0.0] for k in range(50)]
        r = 0
        while not stop.is_set():
            for i in ids:
                claim = forged if i % 2 else dead
                frames = [pack(Message(kind="heartbeat", sender=i, round=r,
                                       info={"address": claim})),
                          _view(i, claim, [[i, claim, 0.0]] + invented, nonce=r + 1),
                          _poison(model, i, r)]
                for j in targets:
                    for f in frames:
                        try:
                            socks[i, j].send_multipart(f, zmq.NOBLOCK)
                        except zmq.Again:
                            pass
            r += 1
            time.sleep(0.1)
    finally:
        ctx.destroy(linger=0)


def test_invented_ids_are_never_merged_held_or_dialled(loopback_peers, run_threads):
    n = 4
    addresses = loopback_peers(n)
    listener = _forged_listener()
    forged = "tcp://127.0.0.2:%d" % listener.getsockname()[1]
    dead = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    tasks = [build_task(TaskConfig(model="mlp", lr=0.05), DataConfig(dataset="digits"), i, n, 0)
             for i in range(n)]
    stop = threading.Event()
    attacker = threading.Thread(target=_attack, args=(addresses, copy.deepcopy(tasks[0].model),
                                                      forged, dead, stop))

    def peer_main(i: int) -> tuple:
        seed = addresses[1] if i == 0 else addresses[0]
        with Peer(tasks[i].model, _config(seed), id=i, peers={i: addresses[i]},
                  num_samples=tasks[i].num_samples) as peer:
            assert not peer.wait_for_neighbors()
            merged: set[int] = set()
            most_held, most_dealers = 0, 0
            deadline = time.monotonic() + 60  # under load, admission may outlast 300 steps
            step = 0
            while step < 300 or (not merged and time.monotonic() < deadline):
                step += 1
                tasks[i].train_step()
                merged |= set((peer.step() or {}).get("merged", ()))
                models, clocks, heard, _ = peer.mailbox.snapshot()
                most_held = max(most_held, len(set(models) | set(clocks) | set(heard)))
                most_dealers = max(most_dealers, len(peer._link.dealers))
                if step >= 300 and not merged:
                    time.sleep(0.05)  # a steady pace while this peer's probes are answered
            return (tasks[i].evaluate(), merged, most_held, most_dealers, peer.stats(),
                    set(peer.swarm.live()), peer.swarm.ignored())

    attacker.start()
    try:
        results = run_threads([lambda i=i: peer_main(i) for i in range(n)], 180)
    finally:
        stop.set()
        attacker.join(10)
    assert _connections(listener) == 0, "a forged address received a connection"
    listener.close()
    for i, (final, merged, held, dealers, stats, live, ignored) in enumerate(results):
        assert merged and merged <= set(range(n)) - {i}, (i, sorted(merged))
        assert live <= set(range(n)), (i, sorted(live))
        assert held <= VIEW_SIZE, (i, held)  # senders with any state held: the view at most
        assert dealers <= VIEW_SIZE + 4 + 1, (i, dealers)  # view + probes + the seed
        assert stats["rejected_by_reason"].get("not_in_view", 0) > 0, stats
        assert final["accuracy"] > 0.85, (i, final)


class _Sybil:
    """An attacker that answers probes at its own address, so it joins as a member."""

    def __init__(self, ctx: zmq.Context, pid: int, target: str) -> None:
        self.pid = pid
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.address = "tcp://127.0.0.1:%d" % self.router.bind_to_random_port("tcp://127.0.0.1")
        self.dealer = _dealer(ctx, pid, target)

    def send(self, frames: list) -> None:
        self.dealer.send_multipart(frames)

    def answer_probes(self) -> None:
        while self.router.poll(0):
            msg = unpack(self.router.recv_multipart()[1:])
            if msg.kind == "view" and msg.info.get("nonce") is not None:
                self.send(pack(Message(kind="view", sender=self.pid, round=0, info={
                    "entries": [[self.pid, self.address, 0.0]], "reply": True,
                    "address": self.address, "echo": msg.info["nonce"]})))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thousand_invented_ids_leave_the_thread_alive_and_fds_bounded(loopback_peers):
    addresses = loopback_peers(2)
    cfg = _config(addresses[0])
    peers = [Peer(torch.nn.Linear(4, 2), cfg, id=i, peers={i: addresses[i]}).start()
             for i in range(2)]
    ctx = zmq.Context()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(len(p.swarm.live()) < 1 for p in peers):
            time.sleep(0.05)
        victim = peers[0]
        sybil = _Sybil(ctx, 900, victim.address)
        while time.monotonic() < deadline + 10 and 900 not in victim.swarm.live():
            sybil.send(_view(900, sybil.address, [[900, sybil.address, 0.0]], nonce=1))
            time.sleep(0.05)
            sybil.answer_probes()
        assert 900 in victim.swarm.live(), "the sybil never joined: the test attacks nothing"
        fds_before = _open_fds()
        dead_ports = free_ports(64)
        invented = [[10_000 + k, "tcp://127.0.0.1:%d" % dead_ports[k % 64], 0.0]
                    for k in range(1024)]
        most_fds, most_dealers = 0, 0
        for round_ in range(8):  # hearsay from a member: 4 shuffles of 256 invented ids each
            for k in range(0, 1024, 256):
                sybil.send(_view(900, sybil.address, invented[k:k + 256]))
            for k in range(128):  # and probes under 1,024 invented ids (128 a round)
                pid = 20_000 + round_ * 128 + k
                s = _dealer(ctx, pid, victim.address)
                s.send_multipart(_view(pid, invented[k][1], [[pid, invented[k][1], 0.0]],
                                       nonce=pid))
                s.close(linger=50)
            sybil.answer_probes()
            time.sleep(0.2)
            most_fds = max(most_fds, _open_fds())
            most_dealers = max(most_dealers, len(victim._link.dealers))
        time.sleep(1.5)  # probes time out; their DEALERs close, and the attacker's sockets
        fds_after = _open_fds()  # (this process's fds count the attacker's too, so: after)
        print(f"fds: {fds_before} before, {most_fds} at most during, {fds_after} after; "
              f"victim DEALERs at most {most_dealers}")
        assert victim.transport.alive and peers[1].transport.alive
        assert most_dealers <= VIEW_SIZE + 4 + 1, most_dealers
        assert fds_after - fds_before < 20, (fds_before, most_fds, fds_after)
        assert set(victim.swarm.live()) <= {1, 900}, victim.swarm.live()
        assert len(victim._link.dealers) <= 3 and 1 in victim.swarm.live()
        ignored = victim.swarm.ignored()
        assert ignored.get("new_over_limit", 0) > 1000, ignored
    finally:
        ctx.destroy(linger=0)
        for p in peers:
            p.close()
