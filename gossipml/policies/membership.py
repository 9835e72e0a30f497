"""Membership without a server: a Cyclon-style peer-sampling protocol.

Each peer keeps a bounded partial *view* of other peers. Every so often it picks a random view
member (or, with an empty view, one of its seed addresses) and sends it a *shuffle*: its own
fresh entry plus ``shuffle_size - 1`` random view entries. The target answers with its own fresh
entry plus random entries of its view, and both merge: entries are deduplicated keeping the
freshest, self is dropped, and when the view overflows the entries just shipped to the other side
go first (the Cyclon swap, which keeps in-degrees balanced), then the oldest.

Source: S. Voulgaris, D. Gavidia, M. van Steen, "CYCLON: Inexpensive Membership Management for
Unstructured P2P Overlays", J. Network Syst. Manage. 13(2), 2005; and M. Jelasity et al.,
"Gossip-based peer sampling", ACM TOCS 25(3), 2007 (the Newscast freshness merge).

Liveness rides on ages, not clocks: an entry on the wire carries ``age_s`` = seconds since the
sender last had first-hand or fresher news of that peer. The receiver stores
``last_heard_s = now_s - age_s`` on its own clock, so no clock synchronisation is needed. A dead
peer stops injecting fresh entries, so every copy of it ages and leaves every view once
``dead_after_s`` has passed (and entries that old are refused on arrival). Pick ``dead_after_s``
well above ``shuffle_period_s * view_size / shuffle_size`` so live peers are not dropped.

Wire form of an entry: ``[peer_id: int, address: str, age_s: float]`` (msgpack-able).
Pure: no sockets, no threads, no clocks (``now_s`` is always passed in).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from gossipml.errors import ConfigError

__all__ = ["MembershipConfig", "ViewEntry", "View", "Membership", "parse_entries", "MAX_WIRE_ENTRIES",
           "MAX_ADDRESS_CHARS"]

#: The most entries one shuffle or reply may carry; longer lists are refused as hostile.
MAX_WIRE_ENTRIES = 256
#: The longest address accepted from the network.
MAX_ADDRESS_CHARS = 256
_MAX_PEER_ID = 2**31 - 1


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
            raise ConfigError("needs view_size >= 1 and 1 <= shuffle_size <= "
                             "view_size + 1")
        if self.shuffle_interval_s <= 0 or self.dead_after_s <= self.shuffle_interval_s:
            raise ConfigError("needs shuffle_interval_s > 0 and dead_after_s well above "
                             "it (e.g. 20x)")
        if self.fanout < 1:
            raise ConfigError("fanout must be >= 1")
        for s in self.seeds:
            if "://" not in s:
                raise ConfigError(f"seed {s!r} is not an endpoint like tcp://host:5555")


@dataclass(frozen=True)
class ViewEntry:
    """One known peer: its id, address, and when (on this peer's clock) it was last known alive."""

    peer_id: int
    address: str
    last_heard_s: float

    def age_s(self, now_s: float) -> float:
        """Seconds since this peer was last known alive (never negative)."""
        return max(0.0, now_s - self.last_heard_s)

    def to_wire(self, now_s: float) -> list[Any]:
        """The msgpack-able form ``[peer_id, address, age_s]``."""
        return [self.peer_id, self.address, self.age_s(now_s)]


def parse_entries(entries: Any) -> list[tuple[int, str, float]]:
    """Check entries received from the network; return ``(peer_id, address, age_s)`` tuples.

    Raises ValueError naming the first bad entry: the sender is untrusted.
    """
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"membership entries must be a list, got {type(entries).__name__}")
    if len(entries) > MAX_WIRE_ENTRIES:
        raise ValueError(f"membership message has {len(entries)} entries, "
                         f"more than the limit {MAX_WIRE_ENTRIES}")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, (list, tuple)) or len(e) != 3:
            raise ValueError(f"membership entry #{i} must be [peer_id, address, age_s], got {e!r:.80}")
        peer_id, address, age_s = e
        if isinstance(peer_id, bool) or not isinstance(peer_id, int) or not 0 <= peer_id <= _MAX_PEER_ID:
            raise ValueError(f"membership entry #{i}: peer_id must be an int in 0..{_MAX_PEER_ID}, "
                             f"got {peer_id!r:.40}")
        if (not isinstance(address, str) or not 0 < len(address) <= MAX_ADDRESS_CHARS
                or "://" not in address or not address.isprintable() or " " in address):
            raise ValueError(f"membership entry #{i}: address must be an endpoint such as "
                             f"tcp://host:5555 (at most {MAX_ADDRESS_CHARS} chars), got {address!r:.80}")
        if isinstance(age_s, bool) or not isinstance(age_s, (int, float)) or not math.isfinite(age_s) \
                or age_s < 0:
            raise ValueError(f"membership entry #{i}: age_s must be a finite number >= 0, got {age_s!r:.40}")
        out.append((peer_id, address, float(age_s)))
    return out


class View:
    """A bounded set of :class:`ViewEntry`, one per peer id."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"view_size must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: dict[int, ViewEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._entries

    def get(self, peer_id: int) -> ViewEntry | None:
        """The entry for ``peer_id``, or None."""
        return self._entries.get(peer_id)

    def entries(self) -> list[ViewEntry]:
        """All entries, sorted by peer id (deterministic order for seeded choices)."""
        return [self._entries[k] for k in sorted(self._entries)]

    def upsert(self, entry: ViewEntry) -> bool:
        """Insert ``entry`` or refresh an existing one if fresher; True when the view changed."""
        old = self._entries.get(entry.peer_id)
        if old is not None and old.last_heard_s >= entry.last_heard_s:
            return False
        self._entries[entry.peer_id] = entry
        return True

    def remove(self, peer_id: int) -> None:
        """Forget ``peer_id`` (no error when absent)."""
        self._entries.pop(peer_id, None)

    def trim(self, evict_first: Iterable[int] = ()) -> list[int]:
        """Shrink to capacity: drop ``evict_first`` ids, then the oldest; return the dropped ids."""
        dropped: list[int] = []
        first = sorted((self._entries[p] for p in set(evict_first) if p in self._entries),
                       key=lambda e: (e.last_heard_s, e.peer_id))
        rest = sorted((e for e in self._entries.values() if e.peer_id not in set(evict_first)),
                      key=lambda e: (e.last_heard_s, e.peer_id))
        for e in first + rest:
            if len(self._entries) <= self.capacity:
                break
            del self._entries[e.peer_id]
            dropped.append(e.peer_id)
        return dropped


class Membership:
    """One peer's side of the peer-sampling protocol (see the module docstring)."""

    def __init__(self, self_id: int, self_address: str, seeds: Sequence[str], view_size: int = 8,
                 shuffle_size: int = 4, dead_after_s: float = 30.0, seed: int = 0) -> None:
        if shuffle_size < 1 or shuffle_size > view_size + 1:
            raise ValueError(f"shuffle_size must be in 1..view_size+1 ({view_size + 1}), got {shuffle_size}")
        if not dead_after_s > 0:
            raise ValueError(f"dead_after_s must be > 0, got {dead_after_s}")
        self.self_id = self_id
        self.self_address = self_address
        self.seeds = [s for s in dict.fromkeys(seeds) if s != self_address]
        self.view = View(view_size)
        self.shuffle_size = shuffle_size
        self.dead_after_s = float(dead_after_s)
        self._rng = random.Random(seed)
        self._shipped: set[int] = set()  # ids sent in our last shuffle: evicted first on the reply
        self._shuffles = 0

    def _self_wire(self) -> list[Any]:
        return [self.self_id, self.self_address, 0.0]

    def _pick(self, now_s: float, k: int, exclude: set[int]) -> list[ViewEntry]:
        pool = [e for e in self.view.entries() if e.peer_id not in exclude]
        return self._rng.sample(pool, min(k, len(pool)))

    def make_shuffle(self, now_s: float) -> tuple[str, list[list[Any]]] | None:
        """Expire, then choose a target address and the entries to send it; None with nobody to ask.

        The target is a random view member, or a seed (see :meth:`_wants_seed`).
        """
        self.expire(now_s)
        self._shuffles += 1
        if self.seeds and self._wants_seed():
            self._shipped = set()
            picked = self._pick(now_s, self.shuffle_size - 1, set())
            return self._rng.choice(self.seeds), [self._self_wire()] + [e.to_wire(now_s) for e in picked]
        if len(self.view) == 0:
            return None
        target = self._rng.choice(self.view.entries())
        picked = self._pick(now_s, self.shuffle_size - 1, {target.peer_id})
        self._shipped = {e.peer_id for e in picked}
        return target.address, [self._self_wire()] + [e.to_wire(now_s) for e in picked]

    def _wants_seed(self) -> bool:
        """First shuffle, empty view, or (sometimes) no seed in the view: ask a seed.

        Without this a seed that has no seeds itself is never found by peers that were contacted
        before their own first shuffle, and a swarm split in two never heals.
        """
        if self._shuffles == 1 or len(self.view) == 0:
            return True
        seeds = set(self.seeds)
        if any(e.address in seeds for e in self.view.entries()):
            return False
        return self._rng.random() < 1.0 / (1 + len(self.view))

    def on_shuffle(self, entries: Any, sender: int | None, now_s: float) -> list[list[Any]]:
        """Answer a shuffle from ``sender`` (peer id, if the transport knows it) and merge it in."""
        parsed = parse_entries(entries)
        exclude = {p for p, _, _ in parsed}
        if sender is not None:
            exclude.add(sender)
        picked = self._pick(now_s, self.shuffle_size - 1, exclude)
        reply = [self._self_wire()] + [e.to_wire(now_s) for e in picked]
        self._merge(parsed, now_s, evict_first={e.peer_id for e in picked})
        return reply

    def on_reply(self, entries: Any, now_s: float) -> None:
        """Merge the answer to our last shuffle, evicting first what we shipped to the other side."""
        parsed = parse_entries(entries)
        self._merge(parsed, now_s, evict_first=self._shipped)
        self._shipped = set()

    def _merge(self, parsed: list[tuple[int, str, float]], now_s: float, evict_first: set[int]) -> None:
        incoming = set()
        for peer_id, address, age_s in parsed:
            if peer_id == self.self_id or age_s >= self.dead_after_s:
                continue
            self.view.upsert(ViewEntry(peer_id, address, now_s - age_s))
            incoming.add(peer_id)
        self.view.trim(evict_first=evict_first - incoming)

    def heard(self, peer_id: int, address: str, now_s: float) -> None:
        """First-hand news: a message from ``peer_id`` at ``address`` arrived now."""
        if peer_id == self.self_id:
            return
        self.view.upsert(ViewEntry(peer_id, address, now_s))
        self.view.trim()

    def expire(self, now_s: float) -> list[int]:
        """Drop peers silent for more than ``dead_after_s``; return their ids."""
        dead = [e.peer_id for e in self.view.entries() if e.age_s(now_s) > self.dead_after_s]
        for p in dead:
            self.view.remove(p)
        return dead

    def live_peers(self) -> dict[int, str]:
        """The current view as ``{peer_id: address}``."""
        return {e.peer_id: e.address for e in self.view.entries()}

    def sample(self, k: int, rng: Any) -> list[int]:
        """``k`` distinct live peer ids (fewer if the view is smaller) drawn with ``rng``.

        ``rng`` is a ``random.Random`` or a ``numpy.random.Generator``.
        """
        ids = sorted(self.live_peers())
        k = min(max(k, 0), len(ids))
        if hasattr(rng, "sample"):
            return list(rng.sample(ids, k))
        return [int(i) for i in rng.choice(ids, size=k, replace=False)] if k else []
