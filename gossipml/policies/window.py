"""Which rounds from the network a peer believes: the round window (pure).

A neighbour's round (a heartbeat's clock, a model's round) is believed when it is at most
:func:`rounds_ahead` past the receiver's clock and never past the clock after the run's last
round. Rounds behind are always plausible (a slow or restarted peer) and move no state forward: a
per-sender clock is a max, a held model is replaced only by a newer one. Beyond the window a
message is refused (``round_out_of_window``), so a forged ``round = 2**62 - 1`` neither sticks as
a neighbour's clock (silencing it) nor drives a catch-up past the run's end.
The round loop widens the window to :data:`DEFAULT_MAX_ROUND_AHEAD` while a peer resumed from a
checkpoint rejoins neighbours that went on without it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_ROUND_AHEAD", "RoundWindow", "rounds_ahead"]

#: How far ahead a neighbour's round may be under async and backup pacing (nothing in the pace
#: bounds it there), unless ``[pacing] max_round_ahead`` says otherwise.
DEFAULT_MAX_ROUND_AHEAD = 1000


def rounds_ahead(mode: str, max_staleness: int, max_round_ahead: int | None = None, *,
                 mutual: bool = True) -> int:
    """How far ahead of a peer a neighbour's round may plausibly be: ``max_round_ahead`` if set;
    else the pace's own bound plus one round of slack (a timeout lets a neighbour go on once
    without us): sync ``1 + 1``, SSP(s) ``s + 1 + 1``; async and backup bound nothing, so
    :data:`DEFAULT_MAX_ROUND_AHEAD`. The pace bounds only neighbours that wait for this peer:
    on a graph that is not ``mutual`` (directed or time-varying) an in-neighbour may run as far
    ahead as its own chain of waits allows, so there too :data:`DEFAULT_MAX_ROUND_AHEAD`."""
    if max_round_ahead is not None:
        return max_round_ahead
    if not mutual:
        return DEFAULT_MAX_ROUND_AHEAD
    if mode == "sync":
        return 2
    if mode == "ssp":
        return max_staleness + 2
    return DEFAULT_MAX_ROUND_AHEAD


@dataclass(frozen=True)
class RoundWindow:
    """Which rounds a message may carry when the receiver's clock is ``clock``: from 0 (a round
    behind moves no state forward) to ``min(clock + ahead, last_clock)``, where ``last_clock``
    (None: unknown) is the clock after the run's last round."""

    ahead: int
    last_clock: int | None = None

    def top(self, clock: int) -> int:
        """The highest round believed at ``clock``."""
        hi = clock + self.ahead
        return hi if self.last_clock is None else max(clock, min(hi, self.last_clock))

    def admits(self, round_: int, clock: int) -> bool:
        """Whether a neighbour's round (or clock) ``round_`` is plausible at ``clock``."""
        return 0 <= round_ <= self.top(clock)
