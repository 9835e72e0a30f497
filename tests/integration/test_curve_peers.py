"""Real peers with CURVE keys: they exchange and average models; a stranger is refused at the
handshake; an allow-listed key that claims another peer's id (in the header, in its routing id) is
rejected as ``sender_mismatch`` and never cuts the real peer's link."""

from __future__ import annotations

import logging
import time

import pytest
import torch
import zmq

from gossipml.cli import main
from gossipml.codecs import build_codec, encode_model
from gossipml.config import ExperimentConfig
from gossipml.data import DataConfig
from gossipml.peer import Peer
from gossipml.tasks import TaskConfig, build_task
from gossipml.comm.security import CurveSetup, curve_for, load_keypair, load_public_key
from gossipml.comm.transport import routing_id
from gossipml.wire import Message, pack

STRANGER = 7


def _config(keys_dir: str | None, timeout_s: float = 5.0) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "pacing": {"mode": "sync", "timeout_s": timeout_s, "interval_steps": 1},
        "topology": {"kind": "ring"}, "peer": {"startup_timeout_s": 10.0},
        "transport": {"curve_keys_dir": keys_dir, "shm": False}})


def _poisoned(model: torch.nn.Module, sender: int, rnd: int) -> list:
    """A well-formed model message that claims ``sender``, with every weight set to 1000."""
    tensors = {k: torch.full_like(v, 1000.0) for k, v in model.state_dict().items()}
    items, _ = encode_model(tensors, build_codec("identity"), None)
    return pack(Message(kind="model", sender=sender, round=rnd, tensors=tuple(items),
                        info={"num_samples": 10_000}))


def _rogue(keys_dir, key_name: str | None, ident: bytes | None, port: int,
           messages: list[list], stop_after_s: float, server: int = 0) -> int:
    """A DEALER (with ``key_name``'s allow-listed key, or none) that keeps sending ``messages``
    (forged as another peer) to peer ``server`` on ``port``; the number it handed to libzmq."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if ident is not None:
        sock.routing_id = ident
    if key_name is not None:
        keys = load_keypair(keys_dir, key_name)
        sock.curve_secretkey, sock.curve_publickey = keys.secret, keys.public
        sock.curve_serverkey = load_public_key(keys_dir / "allowed" / f"peer-{server}.key")
    sock.connect(f"tcp://127.0.0.1:{port}")
    sent = 0
    end = time.monotonic() + stop_after_s
    while time.monotonic() < end:
        for frames in messages:
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                pass
        time.sleep(0.03)
    sock.close()
    ctx.term()
    return sent


def _curve_peer(cfg: ExperimentConfig, i: int, model: torch.nn.Module, addresses: dict,
                steps: int, train=None):
    """Run peer ``i`` under CURVE for ``steps`` rounds; (rounds, stats, refused handshakes)."""
    ctx = zmq.Context()
    curve = curve_for(cfg, i, ctx)
    assert isinstance(curve, CurveSetup)
    try:
        with Peer(model, cfg, id=i, peers=addresses, context=ctx, curve=curve) as peer:
            assert not peer.wait_for_neighbors(10.0)
            rounds = []
            for _ in range(steps):
                if train is not None:
                    train()
                rounds.append(peer.step())
            time.sleep(0.5)  # the rogues keep knocking while we still listen
            return rounds, peer.stats(), curve.refused
    finally:
        curve.stop()
        ctx.term()


def _stranger(keys_dir, server_port: int, stop_after_s: float) -> int:
    """A DEALER with a key not in the allow-list that keeps sending heartbeats as peer 7."""
    keys = load_keypair(keys_dir / "strangers", "peer-7")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, routing_id(STRANGER))
    sock.linger = 0
    sock.curve_secretkey, sock.curve_publickey = keys.secret, keys.public
    sock.curve_serverkey = load_public_key(keys_dir / "allowed" / "peer-0.key")
    sock.connect(f"tcp://127.0.0.1:{server_port}")
    sent = 0
    end = time.monotonic() + stop_after_s
    msg = Message(kind="heartbeat", sender=STRANGER, round=0, info={"done": False, "hears": [0]})
    while time.monotonic() < end:
        try:
            sock.send_multipart(pack(msg), flags=zmq.NOBLOCK)
            sent += 1
        except zmq.Again:  # no connection: the handshake was refused
            pass
        time.sleep(0.05)
    sock.close()
    ctx.term()
    return sent


def _keyed_pair(tmp_path, loopback_peers, n_keys: int):
    """Allow-listed keys peer-0..peer-(n_keys-1), two models 5 apart, their mean, two loopback
    addresses, a CURVE config and peer 0's port."""
    keys_dir = tmp_path / "keys"
    assert main(["keys", str(keys_dir), *(f"peer-{i}" for i in range(n_keys)), "--allow"]) == 0
    torch.manual_seed(0)
    models = [torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)]
    with torch.no_grad():
        models[1].weight.add_(5.0)
    mean0 = (models[0].weight + models[1].weight).detach() / 2
    addresses = loopback_peers(2)
    return (keys_dir, models, mean0, addresses, _config(str(keys_dir)),
            int(addresses[0].rsplit(":", 1)[1]))


def test_curve_peers_average_and_strangers_are_refused(tmp_path, loopback_peers, run_threads):
    keys_dir, models, mean0, addresses, cfg, port0 = _keyed_pair(tmp_path, loopback_peers, 2)
    assert main(["keys", str(keys_dir / "strangers"), "peer-7"]) == 0  # not allow-listed

    def peer_main(i: int):
        ctx = zmq.Context()
        curve = curve_for(cfg, i, ctx)
        assert isinstance(curve, CurveSetup)
        try:
            with Peer(models[i], cfg, id=i, peers=addresses, context=ctx, curve=curve) as peer:
                assert not peer.wait_for_neighbors(10.0)
                rounds = [peer.step() for _ in range(3)]
                time.sleep(1.0)  # let the stranger keep knocking while we still listen
                heard = set(peer.mailbox.snapshot()[2])
                return rounds, peer.stats(), heard, curve.refused, curve.accepted
        finally:
            curve.stop()
            ctx.term()

    (r0, s0, heard0, refused0, accepted0), (r1, s1, *_), sent = run_threads(
        [lambda: peer_main(0), lambda: peer_main(1),
         lambda: _stranger(keys_dir, port0, 3.0)], 60)
    assert torch.allclose(models[0].weight, mean0, atol=1e-5)
    assert torch.equal(models[0].weight, models[1].weight)
    assert all(r["merged"] == [1] for r in r0) and all(r["merged"] == [0] for r in r1)
    assert heard0 == {1}, f"peer 0 heard {heard0}: the stranger got a message through"
    assert s0["rejected"] == 0  # refused at the handshake, never reached the message checks
    assert refused0 > 0 and accepted0 >= 1
    assert s0["bytes_received"] > 0 and s1["bytes_received"] > 0


def test_without_keys_the_peer_warns_once_and_runs_in_the_clear(caplog, monkeypatch):
    from gossipml.comm import security

    monkeypatch.setattr(security, "_warned_pid", None)
    ctx = zmq.Context()
    try:
        with caplog.at_level(logging.WARNING, logger="gossipml.comm.security"):
            assert curve_for(_config(None), 0, ctx) is None
            assert curve_for(_config(None), 1, ctx) is None
    finally:
        ctx.term()
    loud = [r for r in caplog.records if "IN THE CLEAR" in r.getMessage()]
    assert len(loud) == 1


def test_missing_neighbour_key_names_the_file(tmp_path):
    keys_dir = tmp_path / "keys"
    assert main(["keys", str(keys_dir), "peer-0", "--allow"]) == 0
    ctx = zmq.Context()
    curve = CurveSetup(keys_dir, 0, ctx)
    try:
        with pytest.raises(ValueError, match="peer-3.key"):
            curve.server_key(3)
    finally:
        curve.stop()
        ctx.term()


def test_rogue_routing_id_of_a_connected_peer_never_takes_its_link(tmp_path, loopback_peers, run_threads):
    """Peer 2's allow-listed key connecting as routing id ``gml:1`` (and a keyless one as well)
    while peers 0 and 1 run: peer 0 merges peer 1's model every round, the forged models are
    rejected as sender_mismatch and never merged, the keyless one is refused at the handshake."""
    keys_dir, models, mean0, addresses, cfg, port0 = _keyed_pair(tmp_path, loopback_peers, 3)
    forged = [_poisoned(models[0], 1, r) for r in range(8)]
    hb = pack(Message(kind="heartbeat", sender=1, round=0, info={"done": True, "hears": [0]}))
    (r0, s0, refused0), (r1, _, _), sent_keyed, _ = run_threads(
        [lambda: _curve_peer(cfg, 0, models[0], addresses, 8),
         lambda: _curve_peer(cfg, 1, models[1], addresses, 8),
         lambda: _rogue(keys_dir, "peer-2", b"gml:1", port0, [*forged, hb], 4.0),
         lambda: _rogue(keys_dir, None, b"gml:1", port0, [hb], 4.0)], 60)
    assert [r["merged"] for r in r0] == [[1]] * 8, "peer 1's link was cut or its model missed"
    assert [r["merged"] for r in r1] == [[0]] * 8
    assert torch.allclose(models[0].weight, mean0, atol=1e-5), "a forged model was merged"
    assert torch.equal(models[0].weight, models[1].weight)
    assert sent_keyed > 0 and s0["rejected_by_reason"].get("sender_mismatch", 0) > 0, s0
    assert set(s0["rejected_by_reason"]) == {"sender_mismatch"}, s0["rejected_by_reason"]


def test_allow_listed_key_claiming_another_id_is_rejected_while_peers_train(tmp_path, loopback_peers, run_threads):
    """Peer 2's key (allow-listed, not in this run) forges peer 1's and peer 0's models at both
    peers; every forgery is a counted sender_mismatch and the honest pair trains normally."""
    keys_dir = tmp_path / "keys"
    assert main(["keys", str(keys_dir), "peer-0", "peer-1", "peer-2", "--allow"]) == 0
    cfg = _config(str(keys_dir), timeout_s=10.0)
    addresses = loopback_peers(2)
    tasks = [build_task(TaskConfig(model="logreg", lr=0.1), DataConfig(dataset="digits"), i, 2, 0)
             for i in range(2)]
    ports = [int(a.rsplit(":", 1)[1]) for a in addresses.values()]
    forged = {i: [_poisoned(tasks[0].model, 1 - i, r) for r in range(0, 60, 5)] for i in (0, 1)}
    results = run_threads(
        [lambda i=i: _curve_peer(cfg, i, tasks[i].model, addresses, 60, tasks[i].train_step)
         for i in (0, 1)] +
        [lambda i=i: _rogue(keys_dir, "peer-2", None, ports[i], forged[i], 4.0, i) for i in (0, 1)],
        90)
    for i, (rounds, stats, _) in enumerate(results[:2]):
        assert all(r["merged"] == [1 - i] for r in rounds), f"peer {i} missed rounds"
        assert stats["rejected_by_reason"].get("sender_mismatch", 0) > 0, stats
        assert set(stats["rejected_by_reason"]) == {"sender_mismatch"}, stats
        accuracy = tasks[i].evaluate()["accuracy"]
        assert accuracy > 0.85, f"peer {i} accuracy {accuracy}: a forged model got merged"
        weights = torch.cat([p.detach().flatten() for p in tasks[i].model.parameters()])
        assert weights.abs().max() < 100


def test_swarm_with_curve_seeds_dial_by_seed_key_and_speak_as_their_own_id(tmp_path, loopback_peers, run_threads):
    """Membership mode under CURVE: peers know only the seed's address and its seed-0.key; they
    find each other, and every message is credited to its key's peer id (no rejections)."""
    keys_dir = tmp_path / "keys"
    n = 3
    assert main(["keys", str(keys_dir), *[f"peer-{i}" for i in range(n)], "--allow"]) == 0
    allowed = keys_dir / "allowed"
    (allowed / "seed-0.key").write_bytes((allowed / "peer-0.key").read_bytes())
    addresses = loopback_peers(n)
    cfg = ExperimentConfig.from_dict({
        "membership": {"enabled": True, "seeds": [addresses[0]], "shuffle_interval_s": 0.1,
                       "dead_after_s": 5.0, "fanout": 2},
        "pacing": {"mode": "async", "interval_steps": 1, "dead_after_s": 5.0},
        "peer": {"startup_timeout_s": 20.0},
        "transport": {"curve_keys_dir": str(keys_dir), "shm": False}})
    ctxs = [zmq.Context() for _ in range(n)]
    curves = [curve_for(cfg, i, ctxs[i]) for i in range(n)]
    peers = []
    try:
        peers = [Peer(torch.nn.Linear(4, 2), cfg, id=i, peers={i: addresses[i]},
                      context=ctxs[i], curve=curves[i]).start() for i in range(n)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(len(p.swarm.live()) < n - 1 for p in peers):
            time.sleep(0.1)
        assert [sorted(p.swarm.live()) for p in peers] == [[1, 2], [0, 2], [0, 1]]
        merged: dict[int, set] = {i: set() for i in range(n)}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(len(m) < n - 1 for m in merged.values()):
            for p in peers:
                merged[p.id] |= set((p.step() or {}).get("merged", ()))
            time.sleep(0.02)
        assert merged == {0: {1, 2}, 1: {0, 2}, 2: {0, 1}}
        assert [p.stats()["rejected"] for p in peers] == [0] * n
    finally:
        for p in peers:
            p.close()
        for curve, ctx in zip(curves, ctxs):
            curve.stop()
            ctx.term()
