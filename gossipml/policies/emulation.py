"""Emulated slow links and slow peers for experiments and tests (pure, seeded decisions).

The kernel here has no netem, so the transport delays and drops messages itself; this module only
decides. For message number ``m`` on the directed link ``a -> b`` the decision is a function of
``(seed, a, b, m)`` alone: a generator is seeded with those four numbers, so a rerun (or another
process) makes the same choices, and the order in which links are used does not matter.

``drop`` is true with probability ``drop_prob``; ``delay_s = max(0, delay_s + U(-jitter_s,
jitter_s))``. Per-link overrides are keyed ``"a->b"`` (one direction), ``"a-b"`` (both), ``"*->b"``
or ``"a->*"``; the most specific key wins (exact, then ``a->*``, then ``*->b``).

Compute emulation lives here too:

- ``compute_slowdown``: a per-peer factor (``>= 1``, 1 = full speed), ``{"*": 1.0, "3": 3.0}``;
- ``straggler_factor`` / ``straggler_every_rounds``: a moving straggler. In each window of
  ``straggler_every_rounds`` rounds one peer, drawn from ``(seed, window)`` alone (so every peer
  knows who it is without talking), is slowed by ``straggler_factor`` on top of its own factor.
  ``straggler_order = "random"`` draws each window's straggler independently; ``"cycle"`` takes
  them from a seeded permutation of all peers per cycle of ``n_peers`` windows, so every peer is
  the straggler equally often (once a cycle) and no peer falls behind for good by bad luck;
- ``step_time_s``: an emulated device. A local step lasts ``step_time_s * factor`` (the peer
  sleeps out what its real step did not use) instead of its real time ``* factor``. Many peers on
  few cores then behave like peers on their own devices: a sleeping peer leaves the CPU to the
  others, so a slow peer slows its neighbours only through the pacing, not through contention.

TOML::

    [emulation]
    delay_s = 0.01
    jitter_s = 0.005
    seed = 7
    compute_slowdown = {"3" = 3.0}
    straggler_factor = 3.0      # plus one moving straggler, redrawn every round
    step_time_s = 0.03          # each local step lasts 30 ms x its factor
    [emulation.links."0->1"]
    drop_prob = 0.2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["LinkSpec", "LinkEmulation", "link_decision", "LinkPolicy", "STRAGGLER_ORDERS"]

#: What the transport calls: ``(dest, message_number) -> (drop, delay_s)``.
LinkPolicy = Callable[[int, int], tuple[bool, float]]

_LINK_KEYS = ("delay_s", "jitter_s", "drop_prob")
STRAGGLER_ORDERS: tuple[str, ...] = ("random", "cycle")


def _in_range(value: Any, lo: float, hi: float = float("inf")) -> bool:
    """A real number (not a bool) in ``[lo, hi]``."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and lo <= value <= hi


def _check_link(delay_s: float, jitter_s: float, drop_prob: float, where: str) -> None:
    for name, value in (("delay_s", delay_s), ("jitter_s", jitter_s)):
        if not _in_range(value, 0.0):
            raise ValueError(f"{where}{name} must be a number >= 0 (seconds), got {value!r}")
    if not _in_range(drop_prob, 0.0, 1.0):
        raise ValueError(f"{where}drop_prob must be in [0, 1], got {drop_prob!r}")


@dataclass(frozen=True)
class LinkSpec:
    """One link's emulated behaviour: base delay, uniform jitter (+-), drop probability."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    drop_prob: float = 0.0

    @property
    def is_active(self) -> bool:
        """Whether this link delays or drops anything."""
        return self.delay_s > 0 or self.jitter_s > 0 or self.drop_prob > 0


def _parse_peer(token: str, key: str) -> int | None:
    token = token.strip()
    if token == "*":
        return None
    try:
        peer = int(token)
    except ValueError:
        raise ValueError(f"links key {key!r}: {token!r} is not a peer id or '*'; "
                         f"write keys like \"0->1\", \"0-1\", \"*->3\"") from None
    if peer < 0:
        raise ValueError(f"links key {key!r}: peer ids are >= 0")
    return peer


def _expand_key(key: str) -> list[tuple[int | None, int | None]]:
    """``"a->b"`` -> [(a, b)]; ``"a-b"`` -> [(a, b), (b, a)]; ``*`` -> None (any)."""
    if "->" in key:
        a, b = key.split("->", 1)
        return [(_parse_peer(a, key), _parse_peer(b, key))]
    if "-" in key:
        a, b = key.split("-", 1)
        pa, pb = _parse_peer(a, key), _parse_peer(b, key)
        return [(pa, pb), (pb, pa)]
    raise ValueError(f"links key {key!r} must be \"a->b\" (one way) or \"a-b\" (both)")


@dataclass(frozen=True)
class LinkEmulation:
    """Emulation config: default link behaviour, per-link overrides, and compute emulation (per-peer
    slowdown, a moving straggler, an emulated device step time); see the module docstring."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    drop_prob: float = 0.0
    seed: int = 0
    links: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    compute_slowdown: Mapping[str, float] | float = 1.0
    straggler_factor: float = 1.0
    straggler_every_rounds: int = 1
    straggler_order: str = "random"
    step_time_s: float = 0.0

    def __post_init__(self) -> None:
        _check_link(self.delay_s, self.jitter_s, self.drop_prob, "")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        _check_compute(self.straggler_factor, self.straggler_every_rounds, self.step_time_s)
        if self.straggler_order not in STRAGGLER_ORDERS:
            raise ValueError(f"straggler_order must be one of {list(STRAGGLER_ORDERS)}, "
                             f"got {self.straggler_order!r}")
        table: dict[tuple[int | None, int | None], LinkSpec] = {}
        for key, spec in dict(self.links).items():
            if not isinstance(spec, Mapping) or set(spec) - set(_LINK_KEYS):
                raise ValueError(f"link {key!r} must be a table with keys from "
                                 f"{list(_LINK_KEYS)}, got {spec!r}")
            merged = {**{k: getattr(self, k) for k in _LINK_KEYS}, **spec}
            _check_link(merged["delay_s"], merged["jitter_s"], merged["drop_prob"],
                        f"link {key!r}: ")
            for pair in _expand_key(str(key)):
                table[pair] = LinkSpec(**{k: float(v) for k, v in merged.items()})
        slow = self.compute_slowdown
        slow_map = {"*": slow} if not isinstance(slow, Mapping) else dict(slow)
        slowdown: dict[int | None, float] = {}
        for key, factor in slow_map.items():
            if not _in_range(factor, 1.0):
                raise ValueError(f"compute_slowdown[{key!r}] must be a number >= 1.0 "
                                 f"(1.0 = full speed), got {factor!r}")
            slowdown[_parse_peer(str(key), f"compute_slowdown {key!r}")] = float(factor)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_slowdown", slowdown)

    def link(self, src: int, dst: int) -> LinkSpec:
        """The behaviour of ``src -> dst``: exact override, then ``src->*``, ``*->dst``, default."""
        table: dict[Any, LinkSpec] = self._table  # type: ignore[attr-defined]
        for key in ((src, dst), (src, None), (None, dst), (None, None)):
            if key in table:
                return table[key]
        return LinkSpec(self.delay_s, self.jitter_s, self.drop_prob)

    @property
    def is_active(self) -> bool:
        """Whether any link delays or drops anything (the transport may skip emulation if not)."""
        table: dict[Any, LinkSpec] = self._table  # type: ignore[attr-defined]
        return LinkSpec(self.delay_s, self.jitter_s, self.drop_prob).is_active or any(
            s.is_active for s in table.values())

    def slowdown(self, peer: int) -> float:
        """Compute slowdown factor of ``peer`` (its entry, else ``"*"``, else 1.0)."""
        slow: dict[int | None, float] = self._slowdown  # type: ignore[attr-defined]
        return slow.get(peer, slow.get(None, 1.0))

    def straggler(self, round_: int, n_peers: int) -> int | None:
        """The moving straggler in ``round_`` among peers ``0..n_peers-1`` (None when off):
        one per window of ``straggler_every_rounds`` rounds, drawn from ``(seed, window)``
        (``random``) or the window's place in a permutation drawn from ``(seed, cycle)``."""
        if self.straggler_factor <= 1.0 or n_peers < 1:
            return None
        window = max(round_, 0) // self.straggler_every_rounds
        if self.straggler_order == "cycle":
            cycle, place = divmod(window, n_peers)
            order = np.random.default_rng([self.seed, 0xC1C1, cycle]).permutation(n_peers)
            return int(order[place])
        return int(np.random.default_rng([self.seed, 0x57A6, window]).integers(n_peers))

    def step_factor(self, peer: int, round_: int, n_peers: int) -> float:
        """Compute factor of ``peer``'s steps in ``round_``: its own slowdown, times
        ``straggler_factor`` when it is that round's moving straggler."""
        factor = self.slowdown(peer)
        if self.straggler(round_, n_peers) == peer:
            factor *= self.straggler_factor
        return factor

    def pad_s(self, factor: float, step_s: float) -> float:
        """How long to sleep after a real step of ``step_s`` seconds run at ``factor``:
        ``step_time_s * factor - step_s`` (never < 0) with an emulated device, else
        ``(factor - 1) * step_s``."""
        if self.step_time_s > 0:
            return max(0.0, self.step_time_s * factor - step_s)
        return max(0.0, (factor - 1.0) * step_s)

    def decide(self, src: int, dst: int, message: int) -> tuple[bool, float]:
        """``(drop, delay_s)`` for message number ``message`` on ``src -> dst``; see module doc."""
        return link_decision(self.link(src, dst), self.seed, src, dst, message)

    def policy(self, src: int) -> LinkPolicy:
        """The transport's ``link_policy`` for peer ``src``: ``(dest, n) -> (drop, delay_s)``."""
        return lambda dest, n: self.decide(src, dest, n)


def _check_compute(factor: float, every_rounds: int, step_time_s: float) -> None:
    if not _in_range(factor, 1.0):
        raise ValueError(f"straggler_factor must be a number >= 1.0 (1.0 = no "
                         f"straggler), got {factor!r}")
    if isinstance(every_rounds, bool) or not isinstance(every_rounds, int) or every_rounds < 1:
        raise ValueError(f"straggler_every_rounds must be an integer >= 1, "
                         f"got {every_rounds!r}")
    if not _in_range(step_time_s, 0.0, 60.0):
        raise ValueError(f"step_time_s must be a number in [0, 60] seconds "
                         f"(0 = the real step time), got {step_time_s!r}")


def link_decision(spec: LinkSpec, seed: int, src: int, dst: int,
                  message: int) -> tuple[bool, float]:
    """Seeded ``(drop, delay_s)``: generator keyed by ``(seed, src, dst, message)``."""
    if not spec.is_active:
        return False, 0.0
    if min(src, dst, message) < 0:
        raise ValueError(f"link_decision needs ids and message numbers >= 0, got "
                         f"src={src}, dst={dst}, message={message}")
    rng = np.random.default_rng([seed, src, dst, message])
    u_drop, u_jitter = rng.random(2)
    drop = bool(u_drop < spec.drop_prob)
    delay_s = max(0.0, spec.delay_s + (2.0 * u_jitter - 1.0) * spec.jitter_s)
    return drop, float(delay_s)
