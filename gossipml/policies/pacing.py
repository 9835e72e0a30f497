"""When a peer goes on to its next round, and whose models it merges: pure pacing policies.

Every policy is a function of a :class:`PaceView` (what the peer knows, with the clock passed in as
numbers) to a :class:`PaceDecision`. The peer calls ``decide`` again whenever something arrives or
a short poll passes, until ``proceed`` is true.

- ``sync``: at clock ``r`` wait until every expected live neighbour's round-``r`` model has arrived,
  or ``timeout_s`` has passed; merge the models of round ``>= r``.
- ``async``: never wait; merge every held model not merged yet (any sender).
- ``ssp`` (stale synchronous parallel, Ho et al., NeurIPS 2013) with bound ``s``: at clock ``c``
  wait until every expected live neighbour's known clock is ``>= c - s`` (or the timeout); merge
  the unmerged models of round ``>= c - s``, never an older one.
- ``backup`` (backup workers, Chen et al., "Revisiting Distributed Synchronous SGD", 2016): go on
  when the first ``k`` of the ``d`` expected neighbours' round-``r`` models have arrived (by arrival
  order), merge only those ``k``; late ones are ignored for this round (partial aggregation).
  With ``backup_catch_up`` a peer whose round the first ``k`` finished without it drops the rest
  of that round (and any round they finished since), merges their newer models and joins their
  round, as a backup worker restarts on the newest parameters instead of staying behind.

A neighbour in ``view.dead`` never blocks; :class:`Liveness` decides who is dead from silence.
:class:`Schedule` says at which local steps to push, pull and send heartbeats.

Clocks from the network are believed only within :class:`RoundWindow`: a neighbour's round may be
at most ``PacingConfig.rounds_ahead`` ahead of the receiver's clock (the pace's bound plus a
round of slack; on a graph that is not mutual, more: ``window.rounds_ahead``) and never past the
run's last clock; rounds
behind are always plausible (a slow or restarted peer) and move no state forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Mapping, Protocol

from gossipml.policies.combinations import schedule_problem
from gossipml.policies.window import DEFAULT_MAX_ROUND_AHEAD, RoundWindow, rounds_ahead

__all__ = [
    "PACING_MODES",
    "PacingConfig",
    "PaceView",
    "PaceDecision",
    "Pacing",
    "SyncPacing",
    "AsyncPacing",
    "SSPPacing",
    "BackupPacing",
    "build_pacing",
    "Liveness",
    "Schedule",
    "RoundWindow",
    "DEFAULT_MAX_ROUND_AHEAD",
]

PACING_MODES: tuple[str, ...] = ("async", "sync", "ssp", "backup")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PacingConfig:
    """Pace (mode, timeout, staleness bound, backup k), liveness and exchange frequency."""

    mode: str = "async"
    timeout_s: float = 10.0
    max_staleness: int = 2
    backup_k: int | None = None  # None: d - 1 of the d expected neighbours (at least 1)
    # backup: a peer whose round the first k finished without it drops the rest and joins theirs
    backup_catch_up: bool = False
    dead_after_s: float = 15.0
    heartbeat_interval_s: float = 1.0
    interval_steps: int = 1
    push_every_steps: int | None = None  # None: every interval_steps
    pull_every_steps: int | None = None  # None: never pull (push-only gossip)
    final_sync: bool = False  # the last round waits for every live neighbour's last model
    # merge a model k rounds old as its difference from our own round-k model (gossipml.peer.stale),
    # keeping own models of the last stale_window_rounds rounds (None: max_staleness + 1 under
    # SSP, else 4)
    stale_correction: bool = False
    stale_window_rounds: int | None = None
    # how many rounds ahead of this peer's clock a neighbour's message may be (None: derived
    # from the mode, see rounds_ahead); further ahead is refused as round_out_of_window
    max_round_ahead: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in PACING_MODES:
            raise ValueError(f"unknown pacing mode {self.mode!r}; "
                             f"choose one of {list(PACING_MODES)}")
        for name in ("timeout_s", "dead_after_s", "heartbeat_interval_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number > 0 (seconds), got {value!r}")
        if self.heartbeat_interval_s >= self.dead_after_s:
            raise ValueError(f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be < "
                             f"dead_after_s ({self.dead_after_s}), or live neighbours look dead")
        if not _is_int(self.max_staleness) or self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0 for pacing='ssp' (an integer number of "
                             f"clocks), got {self.max_staleness!r}")
        if self.backup_k is not None and (not _is_int(self.backup_k) or self.backup_k < 1):
            raise ValueError(f"backup_k must be an integer >= 1 for pacing='backup' (or unset for "
                             f"d - 1), got {self.backup_k!r}")
        for name in ("final_sync", "stale_correction", "backup_catch_up"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.stale_window_rounds is not None and (
                not _is_int(self.stale_window_rounds) or self.stale_window_rounds < 1):
            raise ValueError(f"stale_window_rounds must be an integer >= 1 (rounds of own models "
                             f"kept for stale_correction), got {self.stale_window_rounds!r}")
        if self.max_round_ahead is not None and (
                not _is_int(self.max_round_ahead) or self.max_round_ahead < 1):
            raise ValueError(f"max_round_ahead must be an integer >= 1 (rounds a neighbour may be "
                             f"ahead of this peer), or unset for the mode's default, got "
                             f"{self.max_round_ahead!r}")
        for name in ("interval_steps", "push_every_steps", "pull_every_steps"):
            value = getattr(self, name)
            if (value is not None or name == "interval_steps") and (
                    not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 (local steps), got {value!r}")

        problem = schedule_problem(self)
        if problem is not None:
            raise ValueError(problem)

    @property
    def stale_window(self) -> int:
        """Rounds of own models kept for ``stale_correction``: under SSP(s) a merged model is at
        most s rounds old, so s + 1 suffice."""
        if self.stale_window_rounds is not None:
            return self.stale_window_rounds
        return self.max_staleness + 1 if self.mode == "ssp" else 4

    @property
    def rounds_ahead(self) -> int:
        """How far ahead a neighbour's round may be on a mutual (static, undirected) graph;
        the round loop widens it on others (:func:`gossipml.policies.window.rounds_ahead`)."""
        return rounds_ahead(self.mode, self.max_staleness, self.max_round_ahead)


@dataclass(frozen=True)
class PaceView:
    """What a peer knows when it decides: its clock, the time (seconds, any monotonic origin),
    the expected in-neighbours, the round of each held model, neighbours' known clocks, the dead;
    ``horizon``: no clock above it is believed (None: no bound); ``merged``: senders whose held model was merged already; ``arrival_order``: senders in the
    order their held models arrived (earliest first; senders not listed come after, by id)."""

    clock: int
    now_s: float
    waiting_since_s: float
    expected: tuple[int, ...]
    arrived_rounds: Mapping[int, int]
    known_clocks: Mapping[int, int] = field(default_factory=dict)
    dead: frozenset[int] = frozenset()
    merged: frozenset[int] = frozenset()
    arrival_order: tuple[int, ...] = ()
    horizon: int | None = None  # the highest neighbour clock believed (RoundWindow.top)

    @property
    def waited_s(self) -> float:
        """Seconds spent waiting in this round so far."""
        return self.now_s - self.waiting_since_s

    def clock_of(self, peer: int) -> int | None:
        """Best known clock of ``peer``: max of its announced clock and its held model's round."""
        known = [v for v in (self.known_clocks.get(peer), self.arrived_rounds.get(peer))
                 if v is not None]
        return max(known) if known else None

    def has_round(self, peer: int, round_: int) -> bool:
        """Whether the held model of ``peer`` is of round ``>= round_``."""
        return self.arrived_rounds.get(peer, -1) >= round_

    def ordered(self, peers: Iterable[int]) -> list[int]:
        """``peers`` in arrival order (see ``arrival_order``), unknown ones after, by id."""
        rank = {p: i for i, p in enumerate(self.arrival_order)}
        return sorted(peers, key=lambda p: (rank.get(p, len(rank)), p))


@dataclass(frozen=True)
class PaceDecision:
    """Go on or not; whose held models to merge; who was missing (or is awaited); why."""

    proceed: bool
    merge: tuple[int, ...] = ()
    missing: tuple[int, ...] = ()
    reason: str = ""


class Pacing(Protocol):
    """A pacing policy: a pure function of the view. ``merges_newest``: merge each chosen
    neighbour's newest held model (async, SSP: a peer that is behind takes its neighbours' later
    models as they take its earlier ones), not its model of the peer's own round (sync, backup)."""

    merges_newest: ClassVar[bool]

    def decide(self, view: PaceView) -> PaceDecision:
        """Proceed, wait, or proceed with what is there."""
        ...


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _timed_out(view: PaceView, timeout_s: float) -> bool:
    return view.waited_s >= timeout_s


def _go(merge: Iterable[int], missing: Iterable[int], reason: str) -> PaceDecision:
    return PaceDecision(True, tuple(sorted(merge)), tuple(sorted(missing)), reason)


@dataclass(frozen=True)
class SyncPacing:
    """Wait for every live expected neighbour's round-r model, or ``timeout_s``."""

    merges_newest: ClassVar[bool] = False

    timeout_s: float = 10.0

    def decide(self, view: PaceView) -> PaceDecision:
        """Proceed when all live expected models of round >= clock arrived, or on timeout."""
        r = view.clock
        present = [j for j in view.expected if view.has_round(j, r)]
        absent = [j for j in view.expected if not view.has_round(j, r)]
        blocking = [j for j in absent if j not in view.dead]
        if not blocking:
            return _go(present, absent, "all_arrived" if not absent else "rest_dead")
        if _timed_out(view, self.timeout_s):
            return _go(present, absent, "timeout")
        return PaceDecision(False, (), tuple(sorted(blocking)), "waiting")


@dataclass(frozen=True)
class AsyncPacing:
    """Never wait; merge every held model not merged yet, from any sender."""

    merges_newest: ClassVar[bool] = True

    def decide(self, view: PaceView) -> PaceDecision:
        """Proceed at once with the unmerged held models."""
        fresh = [j for j in view.arrived_rounds if j not in view.merged]
        return _go(fresh, (), "async")


@dataclass(frozen=True)
class SSPPacing:
    """Bounded staleness ``s``: wait until every live expected neighbour's clock is ``>= c - s``."""

    merges_newest: ClassVar[bool] = True

    max_staleness: int = 2
    timeout_s: float = 10.0

    def decide(self, view: PaceView) -> PaceDecision:
        """Proceed when no live expected neighbour lags more than s; merge only models within s."""
        floor = view.clock - self.max_staleness
        lagging = [j for j in view.expected if _or(view.clock_of(j), -1) < floor]
        blocking = [j for j in lagging if j not in view.dead]
        fresh = [j for j, rnd in view.arrived_rounds.items()
                 if rnd >= floor and j not in view.merged]
        if not blocking:
            return _go(fresh, lagging, "within_bound" if not lagging else "rest_dead")
        if _timed_out(view, self.timeout_s):
            return _go(fresh, lagging, "timeout")
        return PaceDecision(False, (), tuple(sorted(blocking)), "waiting")


@dataclass(frozen=True)
class BackupPacing:
    """k of d: proceed when the first ``k`` expected round-r models arrived; merge those only."""

    merges_newest: ClassVar[bool] = False

    k: int | None = None
    timeout_s: float = 10.0
    catch_up_enabled: bool = False

    def needed(self, d: int) -> int:
        """How many of ``d`` expected neighbours to wait for: k (capped at d), default d - 1."""
        k = self.k if self.k is not None else d - 1
        return max(0, min(d, max(k, 1 if d else 0)))

    def decide(self, view: PaceView) -> PaceDecision:
        """First k arrivals of round >= clock (live or dead); dead ones lower the bar."""
        r = view.clock
        arrived = view.ordered(j for j in view.expected if view.has_round(j, r))
        absent = [j for j in view.expected if not view.has_round(j, r)]
        live_absent = [j for j in absent if j not in view.dead]
        need = min(self.needed(len(view.expected)), len(arrived) + len(live_absent))
        chosen = arrived[:need]
        late = [j for j in view.expected if j not in chosen]
        if len(arrived) >= need:
            return _go(chosen, late, "first_k")
        if _timed_out(view, self.timeout_s):
            return _go(chosen, late, "timeout")
        return PaceDecision(False, (), tuple(sorted(live_absent)), "waiting")

    def catch_up(self, view: PaceView) -> int | None:
        """At clock c (during round c, or after a round with c the next): when k live expected
        neighbours finished round c (they are at clocks > c: the first k go on without this
        peer's model, which would only come late), the clock to jump to, the k-th highest of
        theirs; else None. Backup workers restart on the newest parameters the same way
        (``backup_catch_up``). Only clocks up to ``view.horizon`` count, and the jump never
        goes past it, so a forged clock moves no peer further than the round window."""
        if not self.catch_up_enabled:
            return None
        # a held round-m model says its sender finished round m: it is at clock m + 1 at least
        top = view.horizon
        clocks = sorted((c for c in (max(_or(view.known_clocks.get(j), -1),
                                         view.arrived_rounds.get(j, -2) + 1)
                                     for j in view.expected if j not in view.dead)
                         if top is None or c <= top), reverse=True)
        need = self.needed(len(view.expected))
        if need == 0 or len(clocks) < need or clocks[need - 1] <= view.clock:
            return None
        return clocks[need - 1]


_BUILDERS: dict[str, Callable[[PacingConfig], Pacing]] = {
    "sync": lambda c: SyncPacing(c.timeout_s),
    "async": lambda c: AsyncPacing(),
    "ssp": lambda c: SSPPacing(c.max_staleness, c.timeout_s),
    "backup": lambda c: BackupPacing(c.backup_k, c.timeout_s, c.backup_catch_up),
}


def build_pacing(cfg: PacingConfig | None = None) -> Pacing:
    """The policy of ``cfg.mode`` (default: async)."""
    cfg = cfg if cfg is not None else PacingConfig()
    return _BUILDERS[cfg.mode](cfg)


class Liveness:
    """Who is dead: silent for more than ``dead_after_s``; revived when heard again. Not
    thread-safe (keep it behind the caller's lock); times are plain numbers."""

    def __init__(self, dead_after_s: float, peers: Iterable[int] = (), start_s: float = 0.0):
        if not dead_after_s > 0:
            raise ValueError(f"dead_after_s must be > 0, got {dead_after_s!r}")
        self.dead_after_s = float(dead_after_s)
        self._last_s: dict[int, float] = {p: float(start_s) for p in peers}  # never heard: start
        self._gone: set[int] = set()

    def heard(self, peer: int, now_s: float, *, done: bool = False) -> None:
        """``peer`` spoke at ``now_s``; ``done=True``: it said goodbye (dead until heard again)."""
        self._last_s[peer] = max(float(now_s), self._last_s.get(peer, float("-inf")))
        if done:
            self._gone.add(peer)
        else:
            self._gone.discard(peer)

    def last_heard_s(self, peer: int) -> float | None:
        """When ``peer`` was last heard (or the start time if never), None if not watched."""
        return self._last_s.get(peer)

    def is_dead(self, peer: int, now_s: float) -> bool:
        """Silent for more than ``dead_after_s`` at ``now_s``, or said goodbye."""
        last = self._last_s.get(peer)
        return peer in self._gone or (last is not None and now_s - last > self.dead_after_s)

    def dead(self, now_s: float) -> frozenset[int]:
        """Every watched peer that is dead at ``now_s``."""
        return frozenset(p for p in self._last_s if self.is_dead(p, now_s))


@dataclass(frozen=True)
class Schedule:
    """Frequency in time: push every ``push_every_steps``, pull every ``pull_every_steps`` (None:
    never), a heartbeat when nothing was sent for ``heartbeat_interval_s``. Steps count from 1."""

    push_every_steps: int = 1
    pull_every_steps: int | None = None
    heartbeat_interval_s: float = 1.0

    @classmethod
    def from_config(cls, cfg: PacingConfig) -> "Schedule":
        """``push_every_steps`` defaults to ``interval_steps``."""
        push = cfg.push_every_steps if cfg.push_every_steps is not None else cfg.interval_steps
        return cls(push, cfg.pull_every_steps, cfg.heartbeat_interval_s)

    def should_push(self, step: int) -> bool:
        """Push (send my model to out-neighbours) after local step ``step`` (1-based)?"""
        return step > 0 and step % self.push_every_steps == 0

    def should_pull(self, step: int) -> bool:
        """Pull (ask in-neighbours for their current model) after local step ``step``?"""
        return self.pull_every_steps is not None and step > 0 and step % self.pull_every_steps == 0

    def should_heartbeat(self, now_s: float, last_sent_s: float) -> bool:
        """Send a clock-carrying heartbeat: nothing sent for ``heartbeat_interval_s``."""
        return now_s - last_sent_s >= self.heartbeat_interval_s

    def messages_over(self, steps: int, out_degree: int, pull_fanout: int = 1) -> dict[str, int]:
        """Messages one peer sends and gets over ``steps`` local steps: pushes ``(steps //
        H_push) * out_degree``; pull requests and replies ``(steps // H_pull) * pull_fanout``."""
        pushes = steps // self.push_every_steps * out_degree
        pulls = steps // self.pull_every_steps * pull_fanout if self.pull_every_steps else 0
        return {"push": pushes, "pull_request": pulls, "pull_reply": pulls}
