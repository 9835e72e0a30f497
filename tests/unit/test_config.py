"""Experiment files: defaults, TOML loading, and refusals that say what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossipml.config import ConfigError, ExperimentConfig, load_experiment
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
