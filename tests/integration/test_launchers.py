"""Real launchers start real ``gossipml peer`` processes: ``mpirun -n 4``, ``torchrun
--nproc-per-node 4`` and ``srun -n 4`` on a one-node Slurm cluster (started by a fixture). Each peer reads its rank from
the launcher's environment, finds the others on this host, trains and writes its events."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from gossipml.events import read_events

pytestmark = pytest.mark.launchers
REPO = Path(__file__).resolve().parents[2]

N_PEERS = 4
ROUNDS = 10
EXPERIMENT = f"""
name = "launchers"
[run]
n_peers = {N_PEERS}
seed = 5
[data]
dataset = "digits"
[task]
model = "logreg"
lr = 0.05
momentum = 0.9
batch_size = 32
[topology]
kind = "ring"
[pacing]
mode = "sync"
timeout_s = 5.0
interval_steps = 5
[peer]
rounds = {ROUNDS}
eval_every_rounds = 5
startup_timeout_s = 30.0
"""


def free_base_port(n: int) -> int:
    """A base port whose ``n`` consecutive ports are free now (GOSSIPML_PORT for one host)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports found in 20000-60000")


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The experiment file in a fresh folder and the environment a launcher passes on."""
    (tmp_path / "exp.toml").write_text(EXPERIMENT)
    env = {**os.environ, "GOSSIPML_PORT": str(free_base_port(N_PEERS)),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                         if p)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GOSSIPML_PEERS", "GOSSIPML_RANK"):
        env.pop(name, None)  # the launcher under test sets the layout, nothing left over
    return tmp_path, env


def run_launcher(argv: list[str], folder: Path, env: dict[str, str], timeout_s: float = 240.0
                 ) -> None:
    """Run ``argv`` in ``folder``; assert it exits 0 and every peer wrote a trained final event."""
    proc = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    assert proc.returncode == 0, f"{argv[0]} exited {proc.returncode}:\n" \
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    files = sorted((folder / "events").glob("peer-*.jsonl"))
    assert [f.name for f in files] == [f"peer-{i}.jsonl" for i in range(N_PEERS)], proc.stderr
    for i, path in enumerate(files):
        events = read_events(path)
        finals = [e for e in events if e["event"] == "final"]
        assert len(finals) == 1 and finals[0]["peer"] == i, events[-3:]
        final = finals[0]
        assert final["rounds"] == ROUNDS and final["rejected"] == 0, final
        assert final["accuracy"] >= 0.85, (i, final["accuracy"])
        assert final["bytes_received"] > 0 and final["bytes_sent"] > 0, final


def gossipml_argv() -> list[str]:
    """This interpreter running ``gossipml`` (the worktree's copy, through PYTHONPATH)."""
    return [sys.executable, "-m", "gossipml"]


def test_mpirun_starts_four_peers_that_train(job):
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not installed (Debian: apt-get install openmpi-bin)")
    folder, env = job
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    run_launcher(["mpirun", *root, "--oversubscribe", "-n", str(N_PEERS), *gossipml_argv(),
                  "peer", "exp.toml"], folder, env)


def test_torchrun_starts_four_peers_that_train(job):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"torchrun not next to {sys.executable} (it ships with torch)")
    folder, env = job
    run_launcher([str(torchrun), "--standalone", "--nproc-per-node", str(N_PEERS), "-m", "gossipml",
                  "peer", "exp.toml"], folder, env)


SLURM_CONF = """\
ClusterName=gossipml
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.sock
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
"""
SLURM_BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "srun", "sinfo")


def _wait_node_idle(env: dict[str, str], daemons: list[subprocess.Popen], folder: Path,
                    timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        dead = [p.args[0] for p in daemons if p.poll() is not None]
        if dead:
            break
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                               text=True, timeout=20).stdout.strip()
        if state == "idle":
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(folder.glob("*.log")))
    raise RuntimeError(f"the one-node Slurm cluster did not become idle (sinfo: {state!r}):\n{logs}")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A one-node Slurm cluster on this host (munged, slurmctld, slurmd on private sockets and
    free ports, everything under a temporary folder); yields ``SLURM_CONF`` for srun."""
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm not installed ({missing} missing; Debian: apt-get install slurmctld "
                    "slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start job steps")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    ctld_port = free_base_port(2)
    (folder / "slurm.conf").write_text(SLURM_CONF.format(
        host=socket.gethostname(), ctld_port=ctld_port, d_port=ctld_port + 1, dir=folder,
        cpus=os.cpu_count() or 1))
    subprocess.run(["mungekey", "--create", f"--keyfile={folder}/munge.key"], check=True)
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    conf = str(folder / "slurm.conf")
    daemons = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for argv in (["munged", "-F", "-f", f"--socket={folder}/munge.sock",
                             f"--key-file={folder}/munge.key", f"--pid-file={folder}/munged.pid",
                             f"--log-file={folder}/munged.log", f"--seed-file={folder}/seed"],)]
    try:
        _wait_for(folder / "munge.sock", daemons)
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-f", conf], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        daemons.append(subprocess.Popen(["slurmd", "-D", "-f", conf, "-N", socket.gethostname()],
                                        env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        _wait_node_idle(env, daemons, folder)
        yield {"SLURM_CONF": conf}
    finally:
        _stop_steps(conf)
        for p in reversed(daemons):
            p.terminate()
        for p in reversed(daemons):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _steps_of(conf: str) -> list[int]:
    """Pids of the slurmstepd processes of the cluster whose configuration is ``conf``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and (proc / "comm").read_text().strip() == "slurmstepd"
                    and f"SLURM_CONF={conf}".encode() in (proc / "environ").read_bytes().split(b"\0")):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _stop_steps(conf: str, timeout_s: float = 15.0) -> None:
    """Let this cluster's job steps finish, then end those left (slurmd would orphan them)."""
    deadline = time.monotonic() + timeout_s
    while _steps_of(conf) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _steps_of(conf):
        os.kill(pid, signal.SIGKILL)


def _wait_for(path: Path, daemons: list[subprocess.Popen], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline or any(p.poll() is not None for p in daemons):
            raise RuntimeError(f"{path} did not appear; see the daemon logs next to it")
        time.sleep(0.1)


def test_srun_on_a_one_node_slurm_cluster_starts_four_peers_that_train(job, slurm_cluster):
    folder, env = job
    run_launcher(["srun", "-n", str(N_PEERS), "--overcommit", "--kill-on-bad-exit=1",
                  *gossipml_argv(), "peer", "exp.toml"], folder, {**env, **slurm_cluster})
