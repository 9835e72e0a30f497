"""The embedding programs the README points to run and learn."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("program, min_accuracy", [
    ("embed_two_peers.py", 0.9),  # peer.step() after each step of the task's own loop
    ("gossip_optimizer.py", 0.8),  # a plain PyTorch loop, its optimizer wrapped: one line
])
def test_embedding_example_learns_digits(program: str, min_accuracy: float):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / program)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    accs = [float(a) for a in re.findall(r"test accuracy ([0-9.]+)", proc.stdout)]
    assert len(accs) == 2 and min(accs) > min_accuracy, proc.stdout
