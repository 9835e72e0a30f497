"""check_feature_split: every key of every table is honoured or refused, never ignored."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gossipml.config import ConfigError, ExperimentConfig, load_experiment
from gossipml.featuresplit.config import RULES, check_feature_split, feature_split_problems

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "linear_feature_split.toml"
FSPLIT = {"run": {"mode": "feature_split", "n_peers": 3}, "task": {"model": "logreg"},
          "pacing": {"mode": "sync"}, "topology": {"kind": "full"}}


def _cfg(**tables) -> ExperimentConfig:
    merged = {k: dict(v) for k, v in FSPLIT.items()}
    for key, sub in tables.items():
        merged[key] = {**merged.get(key, {}), **sub}
    return ExperimentConfig.from_dict(merged)


def test_the_shipped_example_and_the_minimal_config_are_accepted():
    assert load_experiment(EXAMPLE).run.mode == "feature_split"
    assert feature_split_problems(_cfg()) == []


def test_every_key_of_the_tables_it_uses_has_an_explicit_decision():
    # a key added to one of these tables later must be decided here, not fall to the catch-all
    cfg = ExperimentConfig()
    for table in ("run", "data", "task", "peer", "transport", "pacing"):
        keys = {f.name for f in dataclasses.fields(getattr(cfg, table))}
        assert keys == set(RULES[table]), (table, keys ^ set(RULES[table]))
    doc = check_feature_split.__doc__ or ""
    for table in (f.name for f in dataclasses.fields(cfg) if f.name != "name"):
        assert f"[{table}]" in doc, f"[{table}] missing from the docstring table"


@pytest.mark.parametrize("table, key, value, words", [
    ("codec", "spec", "q8", "compression is not supported"),
    ("codec", "content", "delta", "compression is not supported"),
    ("task", "optimizer", "adam", 'set [task] optimizer = "sgd"'),
    ("task", "model", "mlp", "linear model"),
    ("task", "lr_schedule", "cosine", "accelerated full-batch gradient descent"),
    ("task", "device", "cuda", "float64"),
    ("task", "hidden", 64, "no hidden layer"),
    ("topology", "kind", "ring", 'set [topology] kind = "full"'),
    ("topology", "k", 3, "all-to-all"),
    ("pacing", "mode", "async", 'set [pacing] mode = "sync"'),
    ("pacing", "max_staleness", 5, "synchronous"),
    ("aggregation", "rule", "trimmed_mean", "aggregates nothing"),
    ("data", "partition", "dirichlet", "does not split samples"),
    ("data", "seed", 3, "remove [data] seed"),
    ("peer", "checkpoint_dir", "ckpt", "gossip peer"),
    ("emulation", "delay_s", 0.1, "emulation"),
    ("membership", "enabled", True, "fixed set of peers"),
])
def test_a_key_it_cannot_honour_is_refused_with_what_to_do(table, key, value, words):
    with pytest.raises(ConfigError) as err:
        _cfg(**{table: {key: value}})
    message = str(err.value)
    assert message.startswith('[run] mode = "feature_split" cannot honour')
    assert f"[{table}] " in message and words in message


def test_every_problem_is_named_at_once_and_other_modes_are_left_alone():
    problems = feature_split_problems(_cfg().replace(codec={"spec": "q8"}, run={"mode": "processes"},
                                                     task={"optimizer": "adam"}))
    assert [p.split(" =")[0] for p in problems] == ["[codec] spec", "[task] optimizer"]
    ExperimentConfig.from_dict({"codec": {"spec": "q8"}, "task": {"optimizer": "adam"}})


def test_honoured_keys_and_seeds_of_synthetic_data_are_accepted():
    cfg = _cfg(task={"lr": 0.2, "momentum": 0.5, "batch_size": 7, "weight_decay": 0.1},
               peer={"rounds": 3, "eval_every_rounds": 2, "startup_timeout_s": 5.0},
               pacing={"timeout_s": 2.0}, transport={"send_hwm": 4, "shm": False},
               data={"dataset": "synthetic_linear", "seed": 4, "synthetic_features": 9})
    assert cfg.data.seed == 4 and cfg.task.momentum == 0.5
