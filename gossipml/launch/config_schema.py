"""``gossipml schema``: a JSON Schema of the experiment file, generated from the same frozen
dataclasses that validate it (field annotations give types, defaults give defaults, the parts'
fixed choices give enums, every table is closed), its Markdown key reference for the README, and
a small validator for the subset of JSON Schema it emits (``type``, ``enum``, ``anyOf``,
``properties``, ``additionalProperties``, ``items``, ``pattern``)."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

__all__ = ["experiment_schema", "markdown_reference", "validate"]

_REFERENCE = {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
              "description": "your own code as 'module:callable'"}


def _choices() -> dict[tuple[str, str], tuple[str, ...]]:
    from gossipml.aggregation import registered_rules
    from gossipml.aggregation.config import DISTILL_INITS, OPTIMIZERS as DISTILL_OPTIMIZERS
    from gossipml.aggregation.config import WEIGHT_SCHEMES as AGG_WEIGHTS
    from gossipml.config import RUN_MODES
    from gossipml.data.config import DATASETS, PARTITIONS
    from gossipml.policies.emulation import STRAGGLER_ORDERS
    from gossipml.policies.pacing import PACING_MODES
    from gossipml.policies.topology import TOPOLOGY_KINDS, WEIGHT_SCHEMES
    from gossipml.tasks.config import LR_SCHEDULES, MODELS, OPTIMIZERS

    return {("run", "mode"): RUN_MODES, ("data", "dataset"): DATASETS,
            ("data", "partition"): PARTITIONS, ("task", "model"): MODELS,
            ("task", "optimizer"): OPTIMIZERS, ("task", "lr_schedule"): LR_SCHEDULES,
            ("topology", "kind"): TOPOLOGY_KINDS, ("topology", "weights"): WEIGHT_SCHEMES,
            ("pacing", "mode"): PACING_MODES, ("codec", "content"): ("params", "delta"),
            ("aggregation", "rule"): tuple(registered_rules()),
            ("aggregation", "weights"): AGG_WEIGHTS,
            ("aggregation", "distill_optimizer"): DISTILL_OPTIMIZERS,
            ("aggregation", "distill_init"): DISTILL_INITS,
            ("emulation", "straggler_order"): STRAGGLER_ORDERS}


#: (table, key) pairs whose choices also take 'module:callable'
_PLUGGABLE = {("data", "dataset"), ("task", "model")}


def _type_schema(hint: Any) -> dict[str, Any]:
    """JSON Schema of one annotation (``int``, ``float | None``, ``tuple[float, ...]``, ...)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        subs = [_type_schema(a) for a in args if a is not type(None)]
        out = subs[0] if len(subs) == 1 else {"anyOf": subs}
        return {"anyOf": [out, {"type": "null"}]} if type(None) in args else out
    if origin in (tuple, list):
        return {"type": "array", "items": _type_schema(args[0]) if args else {}}
    if origin is dict or hint is dict:
        return {"type": "object"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return {"type": simple[hint]}
    return {}  # Any or a type the TOML cannot spell: no constraint


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_default(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_default(v) for k, v in value.items()}
    return value


def _table_schema(table: str, cls: type, choices: dict) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name])
        if (table, f.name) in choices:
            enum = {"enum": list(choices[(table, f.name)])}
            prop = {"anyOf": [enum, _REFERENCE]} if (table, f.name) in _PLUGGABLE else enum
        if f.default is not dataclasses.MISSING:
            prop["default"] = _json_default(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            prop["default"] = _json_default(f.default_factory())  # type: ignore[misc]
        props[f.name] = prop
    doc = (cls.__doc__ or "").strip().split("\n")[0]
    return {"type": "object", "description": doc, "properties": props,
            "additionalProperties": False}


def experiment_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an experiment file, from the config dataclasses."""
    from gossipml.config import _PARTS

    choices = _choices()
    props: dict[str, Any] = {"name": {"type": "string", "default": "default"}}
    for table, cls in _PARTS.items():
        props[table] = _table_schema(table, cls, choices)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "gossipml experiment", "type": "object", "properties": props,
            "additionalProperties": False}


def _key_text(name: str, prop: dict[str, Any]) -> str:
    enum = prop.get("enum") or next((a["enum"] for a in prop.get("anyOf", []) if "enum" in a),
                                    None)
    if enum is None:
        return name
    plug = " | module:callable" if any("pattern" in a for a in prop.get("anyOf", [])) else ""
    return f"{name} = " + " | ".join(f'"{v}"' for v in enum) + plug


def markdown_reference(schema: dict[str, Any] | None = None) -> str:
    """The README's key reference: one ``[table] # key, key = "a" | "b", ...`` line per table."""
    schema = schema or experiment_schema()
    lines = ['name = "my-experiment"']
    for table, sub in schema["properties"].items():
        if table == "name":
            continue
        keys = ", ".join(_key_text(k, p) for k, p in sub["properties"].items())
        lines.append(f"{'[' + table + ']':<14}# {keys}")
    return "```toml\n" + "\n".join(lines) + "\n```\n"


_JSON_TYPES = {"object": dict, "array": (list, tuple), "string": str, "boolean": bool,
               "null": type(None)}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _JSON_TYPES[name])


def validate(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Every way ``value`` breaks ``schema`` (the subset this module emits), as messages."""
    if "anyOf" in schema:
        if all(validate(value, s, where) for s in schema["anyOf"]):
            return [f"{where or 'file'}: {value!r} matches none of the allowed forms"]
        return []
    if "type" in schema and not _is_type(value, schema["type"]):
        return [f"{where or 'file'}: expected {schema['type']}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{where}: {value!r} does not match {schema['pattern']}"]
    errors: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in value.items():
            if key in schema["properties"]:
                errors += validate(sub, schema["properties"][key], f"{where}.{key}".lstrip("."))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where or 'file'}: unknown key {key!r}")
    if isinstance(value, (list, tuple)) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{where}[{i}]")
    return errors
