"""The round window: how far ahead a neighbour's round is believed, per pacing mode."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipml.policies.pacing import PacingConfig
from gossipml.policies.window import DEFAULT_MAX_ROUND_AHEAD, RoundWindow, rounds_ahead


@pytest.mark.parametrize("mode, staleness, explicit, ahead", [
    ("sync", 2, None, 2), ("ssp", 0, None, 2), ("ssp", 3, None, 5),
    ("async", 2, None, DEFAULT_MAX_ROUND_AHEAD), ("backup", 2, None, DEFAULT_MAX_ROUND_AHEAD),
    ("sync", 2, 7, 7), ("async", 2, 3, 3),
])
def test_rounds_ahead_is_the_pace_bound_plus_slack_or_the_configured_one(mode, staleness,
                                                                         explicit, ahead):
    assert rounds_ahead(mode, staleness, explicit) == ahead
    cfg = PacingConfig(mode=mode, max_staleness=staleness, max_round_ahead=explicit)
    assert cfg.rounds_ahead == ahead


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_round_ahead_is_validated(bad):
    with pytest.raises(ValueError, match="max_round_ahead must be an integer >= 1"):
        PacingConfig(max_round_ahead=bad)


def test_window_admits_behind_and_up_to_ahead_never_past_the_last_clock():
    w = RoundWindow(2)
    assert [r for r in range(10) if w.admits(r, 5)] == list(range(8))
    assert not w.admits(2**62 - 1, 5) and not w.admits(-1, 5)
    capped = RoundWindow(1000, last_clock=30)
    assert capped.top(5) == 30 and capped.admits(30, 5) and not capped.admits(31, 5)
    assert capped.top(30) == 30  # a finished peer still hears its neighbours' last clocks


@given(ahead=st.integers(1, 10**6), last=st.none() | st.integers(0, 10**6),
       clock=st.integers(0, 10**6), r=st.integers(-10, 2**62))
def test_window_top_is_never_below_the_clock_nor_past_ahead(ahead, last, clock, r):
    w = RoundWindow(ahead, last)
    assert clock <= w.top(clock) <= clock + ahead
    assert w.admits(r, clock) == (0 <= r <= w.top(clock))


def test_a_graph_that_is_not_mutual_widens_the_pace_bound():
    """On a directed or time-varying graph an in-neighbour does not wait for this peer, so the
    pace bounds nothing about it: sync and SSP believe as far as async does (capped by the
    run's end), unless max_round_ahead says otherwise."""
    assert rounds_ahead("sync", 0, None, mutual=False) == DEFAULT_MAX_ROUND_AHEAD
    assert rounds_ahead("ssp", 2, None, mutual=False) == DEFAULT_MAX_ROUND_AHEAD
    assert rounds_ahead("sync", 0, 5, mutual=False) == 5
    assert rounds_ahead("sync", 0, None, mutual=True) == 2
