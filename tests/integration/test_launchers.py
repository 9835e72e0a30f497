"""Real launchers start real ``gossipml peer`` processes: ``mpirun -n 4``, ``torchrun
--nproc-per-node 4`` and ``srun -n 4`` on a one-node Slurm cluster. Each peer reads its rank from
the launcher's environment, finds the others on this host, trains and writes its events."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

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
