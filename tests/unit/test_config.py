"""Experiment files: defaults, TOML loading, and refusals that say what to change."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gossipml.config import _PARTS, ConfigError, ExperimentConfig, load_experiment
from gossipml.launch.peersfile import PeerEntry, PeersFileError, load_peers, write_peers

ROOT = Path(__file__).resolve().parents[2]


def test_default_experiment_is_eight_peers_ring_digits():
    cfg = load_experiment()
    assert (cfg.run.n_peers, cfg.topology.kind, cfg.data.dataset) == (8, "ring", "digits")


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_example_loads(path: Path):
    assert isinstance(load_experiment(path), ExperimentConfig)


def test_round_trip_through_dict():
    cfg = load_experiment()
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("table, needle", [
    ({"colour": {}}, "colour"),
    ({"peer": {"roundz": 3}}, "roundz"),
    ({"peer": {"rounds": 0}}, "rounds"),
    ({"run": {"mode": "fibers"}}, "mode"),
    ({"transport": {"send_hwm": 0}}, "send_hwm"),
    ({"peer": "not a table"}, "[peer]"),
])
def test_bad_tables_are_refused_naming_the_problem(table, needle):
    with pytest.raises(ConfigError, match=None) as info:
        ExperimentConfig.from_dict(table)
    assert needle in str(info.value)


def test_unreadable_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_experiment(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nn_peers = 2")
    with pytest.raises(ConfigError, match="not valid"):
        load_experiment(bad)


def test_peer_files(tmp_path: Path):
    for path in sorted((ROOT / "peers").glob("*.toml")):
        entries = load_peers(path)
        assert [e.id for e in entries] == list(range(len(entries)))
    out = tmp_path / "p.toml"
    write_peers(out, [PeerEntry(0, "tcp://a:1", bind="tcp://*:1"), PeerEntry(1, "tcp://b:1", device="cuda:0")])
    assert load_peers(out)[1].device == "cuda:0" and load_peers(out)[0].bind == "tcp://*:1"
    out.write_text('[[peer]]\nid = 1\naddress = "tcp://a:1"\n')
    with pytest.raises(PeersFileError, match="0..0"):
        load_peers(out)
    out.write_text('[[peer]]\nid = 0\naddress = "a:1"\n')
    with pytest.raises(PeersFileError, match="not a ZeroMQ endpoint"):
        load_peers(out)


def test_loading_every_shipped_experiment_imports_no_zmq():
    """Reading a config (what a launcher or a results tool does) must not pull in the transport."""
    paths = [str(p) for p in sorted((ROOT / "examples").glob("*.toml"))]
    paths.append(str(ROOT / "gossipml" / "defaults" / "default.toml"))
    code = (
        "import sys\n"
        "from gossipml.config import load_experiment\n"
        "for path in sys.argv[1:]:\n"
        "    load_experiment(path)\n"
        "bad = sorted(m for m in sys.modules if m == 'zmq' or m.startswith('zmq.'))\n"
        "print(len(sys.argv) - 1, bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split()[0] == str(len(paths)) and len(paths) > 10


_BAD_VALUES: list[Any] = [-1, 0, 0.5, -0.5, 10**12, True, "bogus", "", [1, "x"], {"a": 1}]


def _refusals(table: str) -> list[tuple[str, Any, str]]:
    """(key, bad value, message) for every value of ``_BAD_VALUES`` that ``[table]`` refuses."""
    out = []
    for f in dataclasses.fields(_PARTS[table]):
        for value in _BAD_VALUES:
            try:
                ExperimentConfig.from_dict({table: {f.name: value}})
            except ConfigError as exc:
                out.append((f.name, value, str(exc)))
    return out


@pytest.mark.parametrize("table", sorted(_PARTS))
def test_every_refusal_carries_exactly_one_table_prefix(table):
    prefix = f"[{table}] "
    refusals = _refusals(table)
    assert len({key for key, _, _ in refusals}) >= min(3, len(dataclasses.fields(_PARTS[table])))
    for key, value, message in refusals:
        rest = message[len(prefix):]
        assert message.startswith(prefix), (key, value, message)
        assert not rest.startswith("[") and f"[{table}]" not in rest, (key, value, message)
        assert not rest.startswith(f"{table} "), (key, value, message)  # "[task] task lr"


def test_a_bad_value_is_refused_with_a_config_error_naming_the_key():
    for table, key, value in [("membership", "fanout", 0), ("peer", "attack", 5),
                              ("emulation", "seed", -1), ("task", "lr", 0),
                              ("codec", "spec", "zstd"), ("aggregation", "rule", "avg")]:
        with pytest.raises(ConfigError) as info:
            ExperimentConfig.from_dict({table: {key: value}})
        assert str(info.value).startswith(f"[{table}] ") and key in str(info.value)
