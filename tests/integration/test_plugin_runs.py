"""Your own model and data (issue #18): a package the project does not ship, written here, run by
``gossipml run`` (peer processes and threads) and by ``gossipml peer`` processes directly."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gossipml.comm.addresses import free_ports
from gossipml.launch.peersfile import PeerEntry, write_peers

ACCURACY = 0.85  # digits, 4 peers, 20 rounds of 5 steps of adam

PACKAGE = {
    "mylab/__init__.py": "",
    "mylab/nets.py": '''
        import torch
        from torch import nn


        class GatedNet(nn.Module):
            """A model gossipml does not ship: a gated linear unit then a linear head."""

            def __init__(self, input_shape, num_classes, width=32):
                super().__init__()
                n_in = int(torch.Size(input_shape).numel())
                self.value, self.gate = nn.Linear(n_in, width), nn.Linear(n_in, width)
                self.head = nn.Linear(width, num_classes)

            def forward(self, x):
                x = x.flatten(1)
                return self.head(self.value(x) * torch.sigmoid(self.gate(x)))


        def top1(outputs, targets):
            return float((outputs.argmax(dim=1) == targets).float().mean())
    ''',
    "mylab/data.py": '''
        import numpy as np
        import torch
        from sklearn.datasets import load_digits


        class Digits(torch.utils.data.Dataset):
            """A map-style dataset of (image tensor, label) pairs."""

            def __init__(self, x, y):
                self.x, self.y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

            def __len__(self):
                return len(self.y)

            def __getitem__(self, i):
                return self.x[i].reshape(1, 8, 8), int(self.y[i])


        def load(test_every=5, scale=16.0):
            bunch = load_digits()
            x, y = bunch.data / scale, bunch.target
            test = np.arange(len(y)) % test_every == 0
            return Digits(x[~test], y[~test]), Digits(x[test], y[test])
    ''',
}


def _experiment(mode: str = "processes", partition: str = "iid") -> str:
    return f'''
        name = "plugin-{mode}"
        [run]
        n_peers = 4
        deadline_s = 120
        mode = "{mode}"
        [data]
        dataset = "mylab.data:load"
        partition = "{partition}"
        [data.dataset_args]
        test_every = 5
        [task]
        model = "mylab.nets:GatedNet"
        metric = "mylab.nets:top1"
        optimizer = "adam"
        lr = 0.01
        batch_size = 16
        [task.model_args]
        width = 48
        [topology]
        kind = "ring"
        [pacing]
        mode = "sync"
        timeout_s = 5.0
        interval_steps = 5
        [peer]
        rounds = 20
        eval_every_rounds = 10
    '''


def _write_project(root: Path, experiment: str) -> Path:
    for rel, text in PACKAGE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    exp = root / "experiment.toml"
    exp.write_text(textwrap.dedent(experiment))
    return exp


def _gossipml(args: list[str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gossipml", *args], capture_output=True,
                          text=True, timeout=timeout_s, cwd=cwd)


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_gossipml_run_trains_a_package_of_its_own(tmp_path: Path, mode: str):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    project.mkdir()
    exp = _write_project(project, _experiment(mode))
    out = tmp_path / "run"
    # run from another folder: the experiment's folder, not the cwd, makes mylab importable
    proc = _gossipml(["run", str(exp), "--out", str(out), "--quiet"], elsewhere, 180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_peers"] == [] and len(summary["peers"]) == 4
    assert summary["mean_accuracy"] >= ACCURACY, summary["mean_accuracy"]
    hist = summary["label_histograms"]  # labels read from the plugin's Dataset: 1437 of 1797
    assert len(hist) == 4 and all(len(h) == 10 for h in hist) and sum(map(sum, hist)) == 1437
    config = json.loads((out / "config.json").read_text())
    assert config["task"]["import_path"] == [str(project.resolve())]


def test_gossipml_peer_processes_run_the_same_experiment(tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    exp = _write_project(project, _experiment("processes", partition="dirichlet"))
    ports = free_ports(4)
    write_peers(tmp_path / "peers.toml",
                [PeerEntry(i, f"tcp://127.0.0.1:{p}") for i, p in enumerate(ports)])
    procs = [subprocess.Popen([sys.executable, "-m", "gossipml", "peer", str(exp), "--peers",
                               str(tmp_path / "peers.toml"), "--id", str(i), "--events",
                               str(tmp_path / f"peer-{i}.jsonl")], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(4)]
    try:
        logs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(x[-1500:] for x in logs)
    finals = []
    for i in range(4):
        rows = [json.loads(line) for line in (tmp_path / f"peer-{i}.jsonl").read_text().splitlines()]
        accs = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
        finals.append(accs[-1])
    assert min(finals) >= ACCURACY - 0.1 and sum(finals) / 4 >= ACCURACY, finals


def test_a_bad_reference_names_the_file_the_key_and_what_is_missing(tmp_path: Path):
    exp = _write_project(tmp_path, _experiment().replace("mylab.nets:GatedNet",
                                                         "mylab.nets:GatedNett"))
    proc = _gossipml(["run", str(exp), "--out", str(tmp_path / "run")], tmp_path, 60)
    assert proc.returncode == 2
    assert str(exp) in proc.stderr and "[task] model" in proc.stderr
    assert "no attribute 'GatedNett'" in proc.stderr
    exp.write_text(exp.read_text().replace("GatedNett", "GatedNet")
                   .replace("mylab.data:load", "mylabz.data:load"))
    proc = _gossipml(["run", str(exp)], tmp_path, 60)
    assert proc.returncode == 2 and "[data] dataset" in proc.stderr
    assert "module 'mylabz' was not found" in proc.stderr


def test_gossipml_new_then_run_works_from_an_empty_folder(tmp_path: Path):
    proc = _gossipml(["new", "demo"], tmp_path, 60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == \
        ["README.md", "experiment.toml", "task.py"]
    proc = _gossipml(["run", "demo/experiment.toml", "--quiet"], tmp_path, 180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = (tmp_path / "runs").glob("demo-*")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["failed_peers"] == [] and summary["mean_accuracy"] >= 0.85, summary
    again = _gossipml(["new", "demo"], tmp_path, 60)  # never writes over a project
    assert again.returncode == 2 and "not empty" in again.stderr
