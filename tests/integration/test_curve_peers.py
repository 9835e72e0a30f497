"""Two real peers with CURVE keys exchange and average models; a stranger is refused."""

from __future__ import annotations

import logging
import time

import pytest
import torch
import zmq

from gossipml.cli import main
from gossipml.config import ExperimentConfig
from gossipml.peer import Peer
from gossipml.comm.security import CurveSetup, curve_for, load_keypair, load_public_key
from gossipml.comm.transport import routing_id
from gossipml.wire import Message, pack

STRANGER = 7


def _config(keys_dir: str | None) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "pacing": {"mode": "sync", "timeout_s": 5.0, "interval_steps": 1},
        "topology": {"kind": "ring"}, "peer": {"startup_timeout_s": 10.0},
        "transport": {"curve_keys_dir": keys_dir, "shm": False}})


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


def test_curve_peers_average_and_strangers_are_refused(tmp_path, loopback_peers, run_threads):
    keys_dir = tmp_path / "keys"
    assert main(["keys", str(keys_dir), "peer-0", "peer-1", "--allow"]) == 0
    assert main(["keys", str(keys_dir / "strangers"), "peer-7"]) == 0  # not allow-listed
    torch.manual_seed(0)
    models = [torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)]
    with torch.no_grad():
        models[1].weight.add_(5.0)
    mean0 = (models[0].weight + models[1].weight).detach() / 2
    addresses = loopback_peers(2)
    cfg = _config(str(keys_dir))
    port0 = int(addresses[0].rsplit(":", 1)[1])

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
