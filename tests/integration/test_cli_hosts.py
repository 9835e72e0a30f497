"""`gossipml peer` without a peer file: every peer's address from Slurm, Kubernetes and
GOSSIPML_PEERS environments; `gossipml launch --dry-run`; `gossipml keys`."""

from __future__ import annotations

import shlex

import pytest

from gossipml.cli import main
from gossipml.launch.static import slurm_tasks_per_node, static_layout
from gossipml.launch.peersfile import load_peers
from gossipml.comm.security import load_allowed_keys, load_keypair


def _slurm(procid: int, localid: int, node: str) -> dict[str, str]:
    return {"SLURM_PROCID": str(procid), "SLURM_NTASKS": "5", "SLURM_LOCALID": str(localid),
            "SLURM_JOB_NODELIST": "gpu[01-02],cpu7", "SLURM_TASKS_PER_NODE": "2(x2),1",
            "SLURMD_NODENAME": node, "GOSSIPML_PORT": "7000"}


def test_slurm_nodes_times_tasks_per_node_give_every_address():
    layout = static_layout(_slurm(3, 1, "gpu02"))
    assert layout.id == 3 and layout.source == "slurm"
    assert layout.peers == {0: "tcp://gpu01:7000", 1: "tcp://gpu01:7001", 2: "tcp://gpu02:7000",
                            3: "tcp://gpu02:7001", 4: "tcp://cpu7:7000"}
    assert layout.bind == "tcp://*:7001"
    assert static_layout(_slurm(4, 0, "cpu7")).id == 4


def test_slurm_cyclic_placement_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="GOSSIPML_PEERS"):
        static_layout(_slurm(1, 0, "gpu02"))  # rank 1 on the second node: not block distribution


def test_slurm_tasks_per_node_syntax():
    assert slurm_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert slurm_tasks_per_node("4") == [4]
    with pytest.raises(ValueError, match="N\\(xM\\)"):
        slurm_tasks_per_node("2x3")


def test_kubernetes_statefulset_ordinal_and_service_names():
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "GOSSIPML_WORLD_SIZE": "4",
           "GOSSIPML_SERVICE": "gossipml", "HOSTNAME": "gossipml-2"}
    layout = static_layout(env)
    assert layout.id == 2 and layout.source == "kubernetes" and layout.bind == "tcp://*:5555"
    assert layout.peers == {i: f"tcp://gossipml-{i}.gossipml:5555" for i in range(4)}


def test_gossipml_peers_list_with_rank_or_a_launcher():
    peers = "tcp://10.0.0.1:5555,tcp://10.0.0.2:5555,tcp://10.0.0.3:6000"
    layout = static_layout({"GOSSIPML_PEERS": peers, "GOSSIPML_RANK": "2"})
    assert layout.id == 2 and layout.peers[2] == "tcp://10.0.0.3:6000" and len(layout.peers) == 3
    torchrun = {"GOSSIPML_PEERS": peers, "RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "0"}
    assert static_layout(torchrun).id == 1
    with pytest.raises(ValueError, match="world size 4"):
        static_layout({**torchrun, "WORLD_SIZE": "4"})


def test_no_layout_errors_name_what_to_set():
    with pytest.raises(ValueError, match="GOSSIPML_PEERS"):
        static_layout({"RANK": "0", "WORLD_SIZE": "2"})  # torchrun alone: no addresses
    with pytest.raises(ValueError, match="--peers FILE"):
        static_layout({})


def test_peer_verb_without_layout_exits_2_with_the_message(capsys):
    assert main(["peer"]) == 2
    assert "GOSSIPML_PEERS" in capsys.readouterr().err


def test_launch_dry_run_writes_the_peer_file_and_prints_ssh_lines(tmp_path, capsys):
    hosts = tmp_path / "hosts"
    hosts.write_text("# lab machines\nalice@hostA slots=2\nhostB\n")
    peers_file = tmp_path / "peers.toml"
    assert main(["launch", "--hosts", str(hosts), "exp.toml", "--dry-run", "--base-port", "6000",
                 "--peers-file", str(peers_file), "--workdir", "/srv/run"]) == 0
    lines = [shlex.split(x) for x in capsys.readouterr().out.splitlines() if x.startswith("ssh")]
    assert [line[-2] for line in lines] == ["alice@hostA", "alice@hostA", "hostB"]
    for i, line in enumerate(lines):
        assert line[-1] == (f"cd /srv/run && exec gossipml peer exp.toml --peers {peers_file} "
                            f"--id {i}")
    entries = load_peers(peers_file)
    assert [e.address for e in entries] == ["tcp://hostA:6000", "tcp://hostA:6001",
                                            "tcp://hostB:6000"]
    assert entries[1].bind == "tcp://*:6001"


def test_keys_verb_makes_loadable_pairs_and_the_allow_list(tmp_path, capsys):
    assert main(["keys", str(tmp_path / "keys"), "peer-0", "peer-1", "--allow"]) == 0
    pairs = [load_keypair(tmp_path / "keys", f"peer-{i}") for i in range(2)]
    assert len({p.public for p in pairs}) == 2 and all(len(p.secret) == 40 for p in pairs)
    assert load_allowed_keys(tmp_path / "keys" / "allowed") == {p.public for p in pairs}
    assert main(["keys", str(tmp_path / "keys"), "peer-0"]) == 2  # never overwrites a secret
    assert "exists" in capsys.readouterr().err
