"""The layering of ARCHITECTURE.md, read from the imports: pure layers never touch zmq, threads or
clocks, and importing gossipml starts nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "gossipml"
PURE = ["ops", "codecs", "aggregation", "data", "tasks", "topology.py", "pacing.py", "wire.py",
        "schema.py",
        "emulation.py", "membership.py"]
FORBIDDEN = {"zmq", "threading", "time"}


def _pure_files() -> list[Path]:
    files = []
    for name in PURE:
        path = PKG / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else ([path] if path.exists() else [])
    return files


def test_pure_layers_import_no_sockets_threads_or_clocks():
    files = _pure_files()
    assert len(files) >= 5
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_importing_gossipml_starts_nothing():
    code = ("import sys, threading, gossipml; "
            "assert threading.active_count() == 1; "
            "assert 'torch' not in sys.modules and 'zmq' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
