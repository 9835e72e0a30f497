"""The experiment file's JSON Schema (gossipml schema) against the dataclasses it comes from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gossipml.config import ConfigError, ExperimentConfig, load_experiment, tomllib
from gossipml.launch.config_schema import experiment_schema, validate

ROOT = Path(__file__).resolve().parents[3]
FILES = sorted(ROOT.glob("examples/*.toml")) + [ROOT / "gossipml/defaults/default.toml"]


@pytest.fixture(scope="module")
def schema() -> dict:
    return experiment_schema()


def test_every_table_and_key_of_the_dataclasses_is_in_the_schema_and_closed(schema: dict):
    cfg = ExperimentConfig()
    for f in dataclasses.fields(cfg):
        if f.name == "name":
            continue
        table = schema["properties"][f.name]
        assert table["additionalProperties"] is False
        assert set(table["properties"]) == {g.name for g in dataclasses.fields(getattr(cfg, f.name))}
    assert schema["properties"]["run"]["properties"]["n_peers"] == {"type": "integer",
                                                                      "default": 8}
    assert schema["properties"]["task"]["properties"]["lr_milestones"]["items"] == \
        {"type": "number"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_shipped_example_matches_the_schema(schema: dict, path: Path):
    assert validate(tomllib.loads(path.read_text()), schema) == []
    load_experiment(path)  # and the dataclasses accept it too


@pytest.mark.parametrize("table, problem", [
    ({"task": {"lrr": 0.1}}, "unknown key 'lrr'"),
    ({"tsak": {}}, "unknown key 'tsak'"),
    ({"run": {"n_peers": "four"}}, "expected integer"),
    ({"pacing": {"mode": "lazy"}}, "'lazy' is not one of"),
    ({"task": {"model": "resnet"}}, "matches none of the allowed forms"),
])
def test_the_schema_refuses_what_the_dataclasses_refuse(schema: dict, table: dict, problem: str):
    errors = validate(table, schema)
    assert len(errors) == 1 and problem in errors[0], errors
    with pytest.raises((ConfigError, TypeError)):
        ExperimentConfig.from_dict(table)


def test_own_code_references_match_the_schema(schema: dict):
    table = {"task": {"model": "task:Net", "model_args": {"width": 3}},
             "data": {"dataset": "pkg.data:load", "dataset_args": {"n": 1}}}
    assert validate(table, schema) == []


def test_the_readme_key_reference_is_the_generated_one():
    import subprocess
    import sys

    # a fresh process: other tests may register aggregation rules in this one
    block = subprocess.run([sys.executable, "-m", "gossipml", "schema", "--markdown"],
                           capture_output=True, text=True, timeout=120, check=True).stdout
    assert block.strip() and block.strip() + "\n" in (ROOT / "README.md").read_text(), \
        "run: gossipml schema --markdown, paste it into the README's Experiment files"


def test_the_schema_verb_prints_json_and_checks_files(tmp_path: Path, capsys):
    import json

    from gossipml.cli import main

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == experiment_schema()
    bad = tmp_path / "bad.toml"
    bad.write_text("[peer]\nrouns = 3\n")
    assert main(["schema", "--check", str(bad), str(FILES[0])]) == 1
    assert "unknown key 'rouns'" in capsys.readouterr().out
