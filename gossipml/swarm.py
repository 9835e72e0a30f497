"""A topology drawn from a live membership view: peers that know only a few seed addresses.

``[membership] enabled = true`` replaces the fixed graph of ``[topology]``: the peer keeps a
Cyclon view (:mod:`gossipml.membership`), shuffles it with a random view member (or a seed) every
``shuffle_interval_s``, and each round pushes its model to ``fanout`` peers sampled from the live
view. A peer that falls silent leaves every view after ``dead_after_s``; a new or restarted peer
joins through any seed. The membership state is shared by the training thread (sampling) and
the communication thread (shuffles), so every access holds one lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gossipml.membership import Membership

__all__ = ["MembershipConfig", "SwarmTopology"]


@dataclass(frozen=True)
class MembershipConfig:
    """The ``[membership]`` table: seeds and the peer-sampling protocol's sizes and times."""

    enabled: bool = False
    seeds: tuple[str, ...] = ()
    view_size: int = 16
    shuffle_size: int = 6
    shuffle_interval_s: float = 0.5
    dead_after_s: float = 10.0
    fanout: int = 2  # peers each model is pushed to per round

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(str(s) for s in self.seeds))
        if self.view_size < 1 or not 1 <= self.shuffle_size <= self.view_size + 1:
            raise ValueError("[membership] needs view_size >= 1 and 1 <= shuffle_size <= "
                             "view_size + 1")
        if self.shuffle_interval_s <= 0 or self.dead_after_s <= self.shuffle_interval_s:
            raise ValueError("[membership] needs shuffle_interval_s > 0 and dead_after_s well above "
                             "it (e.g. 20x)")
        if self.fanout < 1:
            raise ValueError("[membership] fanout must be >= 1")
        for s in self.seeds:
            if "://" not in s:
                raise ValueError(f"[membership] seed {s!r} is not an endpoint like tcp://host:5555")


class SwarmTopology:
    """The Topology interface over a live view (time-varying: no spectral gap)."""

    is_static = False

    def __init__(self, cfg: MembershipConfig, self_id: int, self_address: str, seed: int) -> None:
        self.cfg = cfg
        self.self_id = self_id
        self.membership = Membership(self_id, self_address, list(cfg.seeds), cfg.view_size,
                                     cfg.shuffle_size, cfg.dead_after_s, seed=seed)
        self._seed = seed
        self._lock = threading.Lock()
        self._last_shuffle_s = 0.0

    def _now(self) -> float:
        return time.monotonic()

    def live(self) -> dict[int, str]:
        """Live peers of the view: id -> address."""
        with self._lock:
            self.membership.expire(self._now())
            return self.membership.live_peers()

    def out_neighbors(self, peer: int, round: int = 0) -> tuple[int, ...]:
        """``fanout`` live peers drawn for this round (seeded by seed, peer and round)."""
        rng = np.random.default_rng([self._seed, peer, round])
        with self._lock:
            self.membership.expire(self._now())
            return tuple(sorted(self.membership.sample(self.cfg.fanout, rng)))

    def in_neighbors(self, peer: int, round: int = 0) -> tuple[int, ...]:
        """Everyone live may push to this peer."""
        return tuple(sorted(self.live()))

    def mixing_weights(self, peer: int, round: int = 0) -> dict[int, float]:
        """No fixed weights: the peer averages uniformly over what it merges."""
        return {}

    def spectral_gap(self) -> float | None:
        """Time-varying graph: none."""
        return None

    def heard(self, peer_id: int, address: str) -> bool:
        """First-hand news of a peer; True when it is new to the view."""
        with self._lock:
            new = self.membership.view.get(peer_id) is None
            self.membership.heard(peer_id, address, self._now())
            return new

    def due_shuffle(self) -> tuple[str, list[Any]] | None:
        """``(target address, entries)`` when a shuffle is due, else None."""
        now = self._now()
        with self._lock:
            if now - self._last_shuffle_s < self.cfg.shuffle_interval_s:
                return None
            self._last_shuffle_s = now
            return self.membership.make_shuffle(now)

    def on_shuffle(self, entries: Any, sender: int) -> list[Any]:
        """Merge a shuffle and return the reply entries (ValueError for hostile input)."""
        with self._lock:
            return self.membership.on_shuffle(entries, sender, self._now())

    def on_reply(self, entries: Any) -> None:
        """Merge a shuffle reply (ValueError for hostile input)."""
        with self._lock:
            self.membership.on_reply(entries, self._now())
