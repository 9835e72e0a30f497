"""The embedding program the README points to runs and learns."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_embed_two_peers_example_learns_digits():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "embed_two_peers.py")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    accs = [float(a) for a in re.findall(r"test accuracy ([0-9.]+)", proc.stdout)]
    assert len(accs) == 2 and min(accs) > 0.9, proc.stdout


def test_gossip_optimizer_example_learns_digits_with_one_changed_line():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "gossip_optimizer.py")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    accs = [float(a) for a in re.findall(r"test accuracy ([0-9.]+)", proc.stdout)]
    assert len(accs) == 2 and min(accs) > 0.8, proc.stdout
