"""Checkpoints and restart: a peer pair stops after a few rounds, restarts from its checkpoints
and finishes, the clock continuing from the checkpoint (read from the event logs)."""

from __future__ import annotations

import pytest
import torch

from gossipml.config import ExperimentConfig
from gossipml.events import read_events
from gossipml.peer.loop import checkpoint_manager, restore
from gossipml.peer import Peer


def test_pair_stops_restarts_from_checkpoints_and_finishes(tmp_path, pair_config, run_pair):
    ckpt, events = tmp_path / "ckpt", tmp_path / "events"
    first = run_pair(pair_config(ckpt, rounds=5), events)  # checkpoints after rounds 2 and 4
    assert all(f["clock"] == 5 for f in first)
    assert sorted(p.name for p in (ckpt / "peer-1").iterdir()) == ["ckpt-00000002.pt",
                                                                     "ckpt-00000004.pt"]
    finals = run_pair(pair_config(ckpt, rounds=9), events)  # restart: same event files, appended
    for i, final in enumerate(finals):
        log = read_events(events / f"peer-{i}.jsonl")
        resumed = [e for e in log if e["event"] == "resumed"]
        assert len(resumed) == 1 and resumed[0]["resumed_from"] == 3 and resumed[0]["clock"] == 4
        after = log[log.index(resumed[0]):]
        rounds = [e for e in after if e["event"] == "round"]
        # the fifth round (index 4) of the first run was not checkpointed: it is run again
        assert [e["round"] for e in rounds] == [4, 5, 6, 7, 8]
        assert [e["clock"] for e in rounds] == [5, 6, 7, 8, 9]
        assert all(e["resumed_from"] == 3 and e["merged"] == [1 - i] for e in rounds)
        assert final["clock"] == 9 and final["resumed_from"] == 3 and final["accuracy"] > 0.5
    assert sorted(p.name for p in (ckpt / "peer-0").iterdir())[-1] == "ckpt-00000008.pt"


def test_restore_puts_back_model_optimizer_and_clock(tmp_path, pair_config, pair_task,
                                                     loopback_peers):
    cfg = pair_config(tmp_path / "ckpt", rounds=4)
    task = pair_task(cfg, 0)
    for _ in range(3):
        task.train_step()
    peer = Peer(task.model, cfg, id=0, peers=loopback_peers(2))  # never started: no sockets used
    try:
        peer.clock, peer.local_steps = 6, 12
        from gossipml.peer.loop import checkpoint_state

        checkpoint_manager(peer).save(6, checkpoint_state(peer, task, 5))
        fresh = pair_task(cfg, 1)  # another initialisation
        assert not torch.equal(next(fresh.model.parameters()), next(task.model.parameters()))
        assert not fresh.optimizer.state_dict()["state"]
        other = Peer(fresh.model, cfg, id=0, peers=loopback_peers(2))
        try:
            assert restore(other, fresh, checkpoint_manager(other)) == 5
            assert other.clock == 6 and other.local_steps == 12
            for a, b in zip(task.model.state_dict().values(), fresh.model.state_dict().values()):
                assert torch.equal(a, b)
            want, got = task.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
            assert want and sorted(want) == sorted(got)  # momentum buffers came back
            for k in want:
                for name, value in want[k].items():
                    assert torch.equal(torch.as_tensor(value), torch.as_tensor(got[k][name]))
        finally:
            other.close()
    finally:
        peer.close()


EXPERIMENT = """
[run]
n_peers = 2
seed = 1
[data]
dataset = "digits"
[task]
model = "logreg"
lr = 0.05
[pacing]
mode = "sync"
timeout_s = 3.0
interval_steps = 5
dead_after_s = 2.0
[topology]
kind = "ring"
[transport]
curve_keys_dir = "keys"
shm = false
[emulation]
compute_slowdown = {"0" = 40.0, "1" = 40.0}  # slow rounds: peer 1 comes back before the end
[peer]
rounds = 80
eval_every_rounds = 10
startup_timeout_s = 10.0
checkpoint_dir = "ckpt"
checkpoint_every_rounds = 2
"""


@pytest.mark.slow
def test_killed_peer_process_restarts_from_its_checkpoint(tmp_path):
    """`gossipml peer` processes placed by GOSSIPML_PEERS, with CURVE keys: SIGKILL one after its
    round-10 checkpoint, start it again; it resumes there and both finish."""
    import os
    import subprocess
    import sys
    import time

    from gossipml.cli import main
    from gossipml.comm.addresses import free_ports
    from gossipml.launch.local import child_env

    assert main(["keys", str(tmp_path / "keys"), "peer-0", "peer-1", "--allow"]) == 0
    (tmp_path / "exp.toml").write_text(EXPERIMENT)
    env = {**child_env(1), "GOSSIPML_PEERS": ",".join(f"tcp://127.0.0.1:{p}"
                                                      for p in free_ports(2))}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "gossipml", "peer", "exp.toml"],
                                cwd=tmp_path, env={**env, "GOSSIPML_RANK": str(i)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    procs = [start(0), start(1)]
    try:
        ckpt1 = tmp_path / "ckpt" / "peer-1"
        deadline = time.monotonic() + 60
        while not (ckpt1 / "ckpt-00000010.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        procs[1].kill()  # SIGKILL, mid-run
        procs[1].wait()
        newest = max(int(p.stem.split("-")[1]) for p in ckpt1.glob("ckpt-*.pt"))
        assert 10 <= newest < 80, "the peer finished before it was killed: make rounds slower"
        procs[1] = start(1)
        codes = [p.wait(timeout=120) for p in procs]
        assert codes == [0, 0], [p.stderr.read().decode()[-2000:] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    log1 = read_events(tmp_path / "events" / "peer-1.jsonl")
    resumed = [e for e in log1 if e["event"] == "resumed"]
    assert [e["resumed_from"] for e in resumed] == [newest - 1]
    rounds = [e for e in log1[log1.index(resumed[0]):] if e["event"] == "round"]
    assert rounds[0]["round"] == newest and rounds[0]["clock"] == newest + 1
    assert [e["round"] for e in rounds] == list(range(newest, 80))
    assert any(e["merged"] == [0] for e in rounds)  # it merges peer 0's models again
    log0 = read_events(tmp_path / "events" / "peer-0.jsonl")
    after_kill = [e for e in log0 if e["event"] == "round" and e["round"] > newest]
    assert any(e["merged"] == [1] for e in after_kill)  # and peer 0 merges the restarted peer's
    finals = [read_events(tmp_path / "events" / f"peer-{i}.jsonl")[-1] for i in range(2)]
    assert [f["event"] for f in finals] == ["final", "final"]
    assert finals[1]["clock"] == 80 and finals[1]["resumed_from"] == newest - 1


def test_codec_state_survives_a_checkpoint(tmp_path, loopback_peers, run_threads):
    """CHOCO references, error-feedback residuals and stream positions come back on restore."""
    from gossipml.peer.checkpoint import load_checkpoint, save_checkpoint
    from gossipml.config import ExperimentConfig

    cfg = ExperimentConfig.from_dict({"codec": {"spec": "topk:0.5+delta"},
                                      "pacing": {"mode": "sync", "timeout_s": 5.0}})
    addresses = loopback_peers(2)
    models = [torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)]

    def peer_main(i: int):
        with Peer(models[i], cfg, id=i, peers=addresses) as peer:
            peer.wait_for_neighbors(10)
            for _ in range(4):
                peer.step()
            return peer.comm_state()

    state0, _ = run_threads([lambda: peer_main(0), lambda: peer_main(1)], 60)
    save_checkpoint(tmp_path / "c.pt", {"comm": state0})
    loaded = load_checkpoint(tmp_path / "c.pt")["comm"]
    fresh = Peer(torch.nn.Linear(6, 3), cfg, id=0, peers=addresses)  # never started
    fresh.load_comm_state(loaded)
    again = fresh.comm_state()
    assert again["codec"]["out"]["seq"] == state0["codec"]["out"]["seq"] == 4
    ref, ref0 = again["codec"]["out"]["reference"], state0["codec"]["out"]["reference"]
    assert ref.keys() == ref0.keys() and all(torch.equal(ref[k], ref0[k]) for k in ref)
    copies = again["codec"]["in"]["copies"]
    assert set(copies) == {1} and all(torch.equal(copies[1][k], state0["codec"]["in"]["copies"][1][k])
                                      for k in copies[1])
    fresh.events.close()


def test_ensemble_models_survive_a_checkpoint(tmp_path, loopback_peers, run_threads):
    """An output-averaging peer's kept neighbour models come back on restore, so a resumed peer
    predicts with the same ensemble before its neighbours have sent again."""
    from gossipml.peer.checkpoint import load_checkpoint, save_checkpoint

    cfg = ExperimentConfig.from_dict({"aggregation": {"rule": "output_average", "max_models": 4},
                                      "pacing": {"mode": "sync", "timeout_s": 5.0}})
    addresses = loopback_peers(3)
    torch.manual_seed(0)
    models = [torch.nn.Linear(6, 3) for _ in range(3)]

    def peer_main(i: int):
        with Peer(models[i], cfg, id=i, peers=addresses) as peer:
            peer.wait_for_neighbors(10)
            for _ in range(3):
                peer.step()
            return peer.comm_state(), [(m.sender, m.round) for m in peer.aggregator.store]

    (state0, kept0), _, _ = run_threads([lambda i=i: peer_main(i) for i in range(3)], 60)
    assert sorted(s for s, _ in kept0) == [1, 2]  # peer 0 kept both ring neighbours' models
    save_checkpoint(tmp_path / "c.pt", {"comm": state0})
    fresh = Peer(torch.nn.Linear(6, 3), cfg, id=0, peers=addresses)  # never started
    fresh.load_comm_state(load_checkpoint(tmp_path / "c.pt")["comm"])
    assert [(m.sender, m.round) for m in fresh.aggregator.store] == kept0
    saved = {m["sender"]: m["params"] for m in state0["aggregation"]["ensemble_models"]["models"]}
    for m in fresh.aggregator.store:
        assert all(torch.equal(m.params[k], saved[m.sender][k]) for k in saved[m.sender])
    ensemble = fresh.aggregator.predictor(models[0])
    assert len(ensemble.members) == 3 and ensemble.probs(torch.randn(5, 6)).shape == (5, 3)
    fresh.events.close()
