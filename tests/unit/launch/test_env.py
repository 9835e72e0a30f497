"""Launcher environments (Slurm, torchrun, MPI, Kubernetes) and ssh command lines."""

from __future__ import annotations

import re
import shlex
import stat
import sys
from pathlib import Path

import pytest

from gossipml.launch.env import detect_launch_env, expand_slurm_nodelist
from gossipml.launch.ssh import (build_ssh_commands, load_hosts, parse_hosts,
                                 peer_entries_for_hosts, run_commands)
from gossipml.launch.peersfile import load_peers, write_peers
from gossipml.launch.static import static_layout

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize("text, hosts", [
    ("node[01-03,07],gpu5", ["node01", "node02", "node03", "node07", "gpu5"]),
    ("a1", ["a1"]),
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("r[1-2]-n[01-02]", ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
    ("x[009-011],y,z[3]", ["x009", "x010", "x011", "y", "z3"]),
])
def test_expand_slurm_nodelist(text, hosts):
    assert expand_slurm_nodelist(text) == hosts


@pytest.mark.parametrize("bad", ["node[01-03", "node]1[", "n[a-b]", "n[5-2]"])
def test_bad_nodelist_says_what_is_wrong(bad):
    with pytest.raises(ValueError, match="Slurm node list"):
        expand_slurm_nodelist(bad)


def _sbatch_env(task: int) -> dict[str, str]:
    """The environment srun gives task ``task`` of the shipped batch script."""
    text = (EXAMPLES / "slurm" / "gossipml.sbatch").read_text()
    nodes = int(re.search(r"^#SBATCH --nodes=(\d+)", text, re.M).group(1))
    per_node = int(re.search(r"^#SBATCH --ntasks-per-node=(\d+)", text, re.M).group(1))
    env = dict(re.findall(r"^export (\w+)=(\S+)", text, re.M))
    env.update(SLURM_PROCID=str(task), SLURM_NTASKS=str(nodes * per_node),
               SLURM_LOCALID=str(task % per_node), SLURM_JOB_NODELIST=f"gpu[01-{nodes:02d}]",
               SLURMD_NODENAME=f"gpu{task // per_node + 1:02d}", HOSTNAME="login1")
    assert "srun" in text and "gossipml peer" in text
    return env


def test_slurm_tasks_of_the_shipped_batch_script():
    infos = [detect_launch_env(_sbatch_env(t)) for t in range(8)]
    assert [i.rank for i in infos] == list(range(8))
    assert {i.world_size for i in infos} == {8} and {i.source for i in infos} == {"slurm"}
    assert infos[3].address() == "tcp://gpu02:5556"
    assert infos[3].nodes == ("gpu01", "gpu02", "gpu03", "gpu04")
    assert {i.seeds for i in infos} == {("tcp://gpu01:5555",)}
    assert len({i.address() for i in infos}) == 8


def test_torchrun_beats_the_slurm_allocation_it_runs_in():
    env = {**_sbatch_env(0), "RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1",
           "MASTER_ADDR": "gpu01"}
    info = detect_launch_env(env, hostname="gpu03")
    assert (info.source, info.rank, info.world_size, info.local_rank) == ("torchrun", 5, 16, 1)
    assert info.seeds == ("tcp://gpu01:5555",)


@pytest.mark.parametrize("env, expect", [
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
      "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, ("openmpi", 2, 4, 0)),
    ({"PMI_RANK": "3", "PMI_SIZE": "6", "MPI_LOCALRANKID": "1"}, ("pmi", 3, 6, 1)),
    ({"GOSSIPML_RANK": "1", "GOSSIPML_WORLD_SIZE": "2", "RANK": "0", "WORLD_SIZE": "9"},
     ("gossipml", 1, 2, 0)),
])
def test_mpi_and_explicit_variables(env, expect):
    info = detect_launch_env(env, hostname="h")
    assert (info.source, info.rank, info.world_size, info.local_rank) == expect


def _manifest_env() -> tuple[dict[str, str], str, int]:
    """Env vars, StatefulSet name and replicas read from the shipped manifest."""
    text = (EXAMPLES / "k8s" / "gossipml.yaml").read_text()
    env = dict(re.findall(r'- name: (\w+)\n\s+value: "([^"]*)"', text))
    replicas = int(re.search(r"^\s+replicas: (\d+)", text, re.M).group(1))
    sts = text.split("kind: StatefulSet", 1)[1]
    name = re.search(r"^\s+name: ([\w-]+)", sts, re.M).group(1)
    assert re.search(r"^\s+serviceName: " + re.escape(env["GOSSIPML_SERVICE"]) + "$", sts, re.M)
    assert "clusterIP: None" in text  # headless: per-pod DNS names for the seed
    return env, name, replicas


def test_kubernetes_pods_of_the_shipped_statefulset():
    env, name, replicas = _manifest_env()
    assert int(env["GOSSIPML_WORLD_SIZE"]) == replicas
    for ordinal in range(replicas):
        pod_env = {**env, "HOSTNAME": f"{name}-{ordinal}", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
        info = detect_launch_env(pod_env)
        assert (info.source, info.rank, info.world_size) == ("kubernetes", ordinal, replicas)
        assert info.seeds == (f"tcp://{name}-0.{env['GOSSIPML_SERVICE']}:{env['GOSSIPML_PORT']}",)
        assert info.address() == f"tcp://{name}-{ordinal}.{env['GOSSIPML_SERVICE']}:5555"


def test_kubernetes_hostname_without_ordinal_is_an_error():
    with pytest.raises(ValueError, match="StatefulSet"):
        detect_launch_env({"GOSSIPML_WORLD_SIZE": "4", "KUBERNETES_SERVICE_HOST": "x",
                           "HOSTNAME": "web"})


def test_nothing_detected_and_bad_values():
    assert detect_launch_env({"HOME": "/root"}, hostname="laptop") is None
    with pytest.raises(ValueError, match="SLURM_PROCID='x'"):
        detect_launch_env({"SLURM_PROCID": "x", "SLURM_NTASKS": "2"})
    with pytest.raises(ValueError, match="rank 4 is not in"):
        detect_launch_env({"PMI_RANK": "4", "PMI_SIZE": "4"})
    info = detect_launch_env({"PMI_RANK": "0", "PMI_SIZE": "2", "GOSSIPML_SEEDS": "tcp://a:1, tcp://b:2"})
    assert info.seeds == ("tcp://a:1", "tcp://b:2")
    with pytest.raises(ValueError, match="GOSSIPML_SEEDS"):
        detect_launch_env({"PMI_RANK": "0", "PMI_SIZE": "2", "GOSSIPML_SEEDS": "a:1"})


HOSTS = """
# lab machines
alice@10.0.0.1 slots=2
10.0.0.2   # one peer
"""


def test_hosts_file_to_peer_file_and_ssh_lines(tmp_path):
    slots = parse_hosts(HOSTS)
    assert [(s.peer_id, s.target, s.slot) for s in slots] == [
        (0, "alice@10.0.0.1", 0), (1, "alice@10.0.0.1", 1), (2, "10.0.0.2", 0)]
    write_peers(tmp_path / "peers.toml", peer_entries_for_hosts(slots, base_port=6000))
    assert [e.address for e in load_peers(tmp_path / "peers.toml")] == [
        "tcp://10.0.0.1:6000", "tcp://10.0.0.1:6001", "tcp://10.0.0.2:6000"]
    cmds = build_ssh_commands(slots, "/shared/peers.toml", "exp dir/e.toml", workdir="/srv/gml")
    assert cmds[1].argv[0] == "ssh" and cmds[1].argv[-2] == "alice@10.0.0.1"
    assert "BatchMode=yes" in cmds[1].argv
    remote = cmds[1].argv[-1]
    assert shlex.split(remote) == ["cd", "/srv/gml", "&&", "exec", "gossipml", "peer", "exp dir/e.toml",
                                   "--peers", "/shared/peers.toml", "--id", "1"]


@pytest.mark.parametrize("bad", ["host slots=0", "host cores=2", "a;rm -rf /", "", "  # only"])
def test_bad_hosts_file_lines(bad):
    with pytest.raises(ValueError):
        parse_hosts(bad)


def test_run_commands_runs_each_and_kills_at_the_timeout(tmp_path):
    fake_ssh = tmp_path / "fake-ssh"  # stands in for ssh: runs the remote line locally
    fake_ssh.write_text(f"#!/bin/sh\nshift $(($# - 1))\nexec /bin/sh -c \"$1\"\n")
    fake_ssh.chmod(fake_ssh.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "hosts").write_text("h1\nh2 slots=2\n")
    slots = load_hosts(tmp_path / "hosts")
    stub = f"{sys.executable} -c 'import sys; print(sys.argv[1:]); sys.exit(10 + int(sys.argv[-1]))'"
    cmds = build_ssh_commands(slots, "p.toml", gossipml=stub, ssh=str(fake_ssh), ssh_options=())
    codes = run_commands(cmds, timeout_s=20, log_dir=tmp_path / "logs")
    assert codes == {0: 10, 1: 11, 2: 12}  # each remote line ran with its own --id
    assert "'--id', '2'" in (tmp_path / "logs" / "peer-2.log").read_text()
    sleep = f"{sys.executable} -c 'import time; time.sleep(30)'"
    sleeper = build_ssh_commands(slots[:1], "p.toml", gossipml=sleep, ssh=str(fake_ssh),
                                 ssh_options=())
    assert run_commands(sleeper, timeout_s=0.5) == {0: -9}


@pytest.mark.parametrize("env, source", [
    ({"RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "3"}, "torchrun"),
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "2",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "3"}, "openmpi"),
    ({"PMI_RANK": "2", "PMI_SIZE": "3", "MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "3"}, "pmi"),
])
def test_one_host_jobs_place_rank_r_on_loopback_base_port_plus_r(env, source):
    layout = static_layout({**env, "GOSSIPML_PORT": "7100"})
    assert (layout.id, layout.source, layout.bind) == (2, f"{source} (one host)", None)
    assert layout.peers == {r: f"tcp://127.0.0.1:{7100 + r}" for r in range(3)}


def test_jobs_across_hosts_still_need_gossipml_peers():
    two_nodes = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert detect_launch_env(two_nodes, hostname="h").local_size == 4
    with pytest.raises(ValueError, match="not all on this host.*GOSSIPML_PEERS"):
        static_layout(two_nodes)
    with pytest.raises(ValueError, match="local size 9"):
        detect_launch_env({**two_nodes, "LOCAL_WORLD_SIZE": "9"})
    with pytest.raises(ValueError, match="local rank 0.*GOSSIPML_PEERS"):
        static_layout({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
                       "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})


def test_events_path_needs_the_id_under_a_launcher(tmp_path, monkeypatch, capsys):
    from gossipml.cli import main

    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    exp = tmp_path / "exp.toml"
    exp.write_text("[run]\nn_peers = 2\n")
    assert main(["peer", str(exp), "--events", str(tmp_path / "ev.jsonl")]) == 2
    assert "same file for all 2 ranks openmpi starts" in capsys.readouterr().err
