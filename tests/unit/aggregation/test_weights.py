"""Which mixing weights a merge uses: ``[aggregation] weights`` against ``[topology] weights``."""

from __future__ import annotations

import pytest

from gossipml.aggregation import AggregationConfig, Contribution
from gossipml.aggregation.weights import mixing_scheme, scheme_weights
from gossipml.config import ConfigError, ExperimentConfig


@pytest.mark.parametrize("aggregation, topology, used", [
    ("topology", "metropolis", "metropolis"),  # the default follows the topology
    ("topology", "uniform", "uniform"),
    ("uniform", "metropolis", "uniform"),  # an explicit [aggregation] value wins
    ("samples", "metropolis", "samples"),
    ("age", "uniform", "age"),
    ("metropolis", "metropolis", "metropolis"),
])
def test_the_aggregation_table_overrides_the_topology_only_when_set(aggregation, topology, used):
    assert mixing_scheme(aggregation, topology) == used
    cfg = AggregationConfig(weights=aggregation).for_topology(topology)
    assert cfg.weights == used


def test_metropolis_merges_need_metropolis_topology_weights():
    with pytest.raises(ValueError, match=r'\[topology\] weights = "metropolis"'):
        mixing_scheme("metropolis", "uniform")
    with pytest.raises(ConfigError, match="leave \\[aggregation\\] weights out"):
        ExperimentConfig.from_dict({"aggregation": {"weights": "metropolis"},
                                    "topology": {"weights": "uniform"}})
    assert ExperimentConfig().aggregation.weights == "topology"


def test_resolved_metropolis_weights_are_the_rows_mass_missing_to_own():
    # a star leaf: w_ii = 3/4, the centre 1/4 (1/(1 + max(1, 3)))
    centre = Contribution(sender=0, round=0, params={}, weight=0.25)
    assert scheme_weights("metropolis", [centre], 0.75) == pytest.approx([0.75, 0.25])
    # the centre with two of its three leaves arrived: the third leaf's 1/4 stays at home
    leaves = [Contribution(sender=j, round=0, params={}, weight=0.25) for j in (1, 2)]
    assert scheme_weights("metropolis", leaves, 0.25) == pytest.approx([0.5, 0.25, 0.25])
    # uniform ignores the row: own and every merged model alike
    assert scheme_weights("uniform", leaves, 0.25) == pytest.approx([1 / 3] * 3)
