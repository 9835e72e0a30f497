"""The one registry of aggregation rules: what ``[aggregation] rule`` accepts and what builds it.

A leaf module (it imports only :mod:`.base`): the built-in rules register themselves at the end of
their modules (``rules.py``, ``admm.py``, ``distill.py``), which ``gossipml/aggregation/__init__``
imports, and Python runs a package's ``__init__`` before any of its modules, so they are there
before a config is validated. An application adds its own with :func:`register_rule`; a name
already taken raises. :func:`gossipml.aggregation.build.build_aggregator` builds from a config.
"""

from __future__ import annotations

from typing import Callable

from gossipml.aggregation.base import Aggregator

__all__ = ["AggregatorBuilder", "register_rule", "registered_rules", "rule_builder"]

#: ``builder(cfg, **context) -> Aggregator``; context keys: see ``build_aggregator``. A builder
#: should accept and ignore context keys it does not use (``**_``).
AggregatorBuilder = Callable[..., Aggregator]

_RULES: dict[str, AggregatorBuilder] = {}


def register_rule(name: str, builder: AggregatorBuilder) -> None:
    """Add a rule that ``[aggregation] rule = name`` selects; a name already taken raises."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"aggregation rule name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise TypeError(f"builder for rule {name!r} must be callable as builder(cfg, **context), "
                        f"got {type(builder).__name__}")
    if name in _RULES:
        raise ValueError(f"aggregation rule {name!r} is already registered; choose another name")
    _RULES[name] = builder


def registered_rules() -> tuple[str, ...]:
    """Every rule name known, built-in and registered, in registration order."""
    return tuple(_RULES)


def rule_builder(name: str) -> AggregatorBuilder:
    """The builder registered for ``name``; ValueError naming the known rules otherwise."""
    if name not in _RULES:
        raise ValueError(f"unknown aggregation rule {name!r}; known: {sorted(_RULES)} "
                         "(register_rule adds one)")
    return _RULES[name]
