"""Membership without a server: a Cyclon-style peer-sampling protocol, with admission.

Each peer keeps a bounded partial *view* of other peers. Every so often it picks a random view
member (or, with an empty view, one of its seed addresses) and sends it a *shuffle*: its own
fresh entry plus ``shuffle_size - 1`` random view entries. The target answers with its own fresh
entry plus random entries of its view, and both merge: entries are deduplicated keeping the
freshest and self is dropped.

Source: S. Voulgaris, D. Gavidia, M. van Steen, "CYCLON: Inexpensive Membership Management for
Unstructured P2P Overlays", J. Network Syst. Manage. 13(2), 2005; and M. Jelasity et al.,
"Gossip-based peer sampling", ACM TOCS 25(3), 2007 (the Newscast freshness merge).

Admission (the view holds *confirmed* peers only). An id named in a shuffle that the view does
not hold becomes a *candidate*, never a member: the caller (``peer/swarm.py``) probes the
candidate's address and calls :meth:`Membership.confirm` once the peer there proved it holds that
id. So hearsay can never evict a member, and a candidate never receives pushes or has its models
merged. One source may introduce at most ``max_new_per_shuffle`` new ids per message and have at
most that many candidates outstanding; the candidate table is bounded; entries naming a member
at another address are ignored (a member moves only by expiring first). Every ignored entry is
counted in :attr:`Membership.ignored` by reason. When a confirmation overflows the view, the
entries just shipped to the other side go first (the Cyclon swap), then the oldest.

Liveness rides on ages, not clocks: an entry on the wire carries ``age_s`` = seconds since the
sender last had first-hand or fresher news of that peer. The receiver stores
``last_heard_s = now_s - age_s`` on its own clock, so no clock synchronisation is needed. A relayed
(second-hand) entry is believed no younger than ``min_relayed_age_s``: only the peer itself can
be fresher than that, so a relay cannot keep a dead peer alive at full freshness. A dead peer
stops injecting fresh entries, so every copy of it ages and leaves every view once
``dead_after_s`` has passed (and entries that old are refused on arrival). Pick ``dead_after_s``
well above ``shuffle_period_s * view_size / shuffle_size`` so live peers are not dropped.

Wire form of an entry: ``[peer_id: int, address: str, age_s: float]`` (msgpack-able); addresses
are ``tcp://host:port`` only (:func:`parse_tcp_address`). Pure: no sockets, threads or clocks.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from gossipml.errors import ConfigError
from gossipml.policies.view_entries import (MAX_ADDRESS_CHARS, MAX_WIRE_ENTRIES, parse_entries,
                                            parse_tcp_address)

__all__ = ["MembershipConfig", "ViewEntry", "View", "Membership", "Candidate", "parse_entries",
           "parse_tcp_address", "MAX_WIRE_ENTRIES", "MAX_ADDRESS_CHARS"]

@dataclass(frozen=True)
class MembershipConfig:
    """The ``[membership]`` table: seeds, the peer-sampling protocol's sizes and times, and the
    admission limits (new ids per shuffle, probes at once, how long a probe may take)."""

    enabled: bool = False
    seeds: tuple[str, ...] = ()
    view_size: int = 16
    shuffle_size: int = 6
    shuffle_interval_s: float = 0.5
    dead_after_s: float = 10.0
    fanout: int = 2  # peers each model is pushed to per round
    max_new_per_shuffle: int = 2  # new ids one source may introduce per message (and pending)
    max_probes: int = 4  # candidates probed at once: DEALERs beyond the view and the seeds
    probe_timeout_s: float = 2.0  # a candidate that has not proved its id by then is dropped

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
        if self.max_new_per_shuffle < 1 or self.max_probes < 1 or not self.probe_timeout_s > 0:
            raise ConfigError("needs max_new_per_shuffle >= 1, max_probes >= 1 and "
                              "probe_timeout_s > 0 (else no peer beyond the seeds is ever "
                              "admitted)")
        for s in self.seeds:
            if parse_tcp_address(s) is None:
                raise ConfigError(f"seed {s!r} is not an endpoint like tcp://10.0.0.1:5555 "
                                  "(membership speaks tcp only: host an IP or a hostname, "
                                  "port 1..65535)")


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


@dataclass(frozen=True)
class Candidate:
    """An id heard of but not confirmed: where it is said to be, who said so, and when."""

    peer_id: int
    address: str
    source: int | None  # the member that introduced it (None: the id's own claim)
    heard_s: float
    via_seed: bool = False  # introduced by a confirmed seed


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
                 shuffle_size: int = 4, dead_after_s: float = 30.0, seed: int = 0, *,
                 max_new_per_shuffle: int = 2, min_relayed_age_s: float = 0.0,
                 max_candidates: int | None = None) -> None:
        if shuffle_size < 1 or shuffle_size > view_size + 1:
            raise ValueError(f"shuffle_size must be in 1..view_size+1 ({view_size + 1}), got {shuffle_size}")
        if not dead_after_s > 0:
            raise ValueError(f"dead_after_s must be > 0, got {dead_after_s}")
        self.self_id = self_id
        self.self_address = self_address
        self.seeds = [s for s in dict.fromkeys(seeds) if s != self_address]
        self.view = View(view_size)  # confirmed peers only
        self.candidates: dict[int, Candidate] = {}
        self.max_candidates = view_size if max_candidates is None else max_candidates
        self.max_new_per_shuffle = max_new_per_shuffle
        self.min_relayed_age_s = float(min_relayed_age_s)
        self.shuffle_size = shuffle_size
        self.dead_after_s = float(dead_after_s)
        self.ignored: collections.Counter[str] = collections.Counter()  # entries, by reason
        self._departed: set[int] = set()  # left the view since take_departed()
        self._rng = random.Random(seed)
        self._shipped: set[int] = set()  # ids sent in our last shuffle: evicted first on overflow
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

    def reply_entries(self, now_s: float, exclude: Iterable[int] = ()) -> list[list[Any]]:
        """What a shuffle is answered with: our fresh entry and random members not in ``exclude``."""
        picked = self._pick(now_s, self.shuffle_size - 1, set(exclude))
        return [self._self_wire()] + [e.to_wire(now_s) for e in picked]

    def on_shuffle(self, entries: Any, sender: int, now_s: float, *,
                   via_seed: bool = False) -> list[list[Any]]:
        """Answer a shuffle from member ``sender`` and merge it in (new ids become candidates)."""
        parsed = parse_entries(entries)
        reply = self.reply_entries(now_s, {p for p, _, _ in parsed} | {sender})
        self._merge(parsed, sender, now_s, via_seed)
        return reply

    def on_reply(self, entries: Any, now_s: float, sender: int | None = None, *,
                 via_seed: bool = False) -> None:
        """Merge the answer to our last shuffle, from member ``sender``."""
        self._merge(parse_entries(entries), sender, now_s, via_seed)

    def _merge(self, parsed: list[tuple[int, str, float]], sender: int | None, now_s: float,
               via_seed: bool) -> None:
        """Refresh members named at their own address; note at most ``max_new_per_shuffle`` new
        ids as candidates (fewer while this source has candidates pending); ignore the rest."""
        pending = sum(c.source == sender for c in self.candidates.values())
        for peer_id, address, age_s in parsed:
            if peer_id != sender:  # second-hand: never fresher than a relay can know
                age_s = max(age_s, self.min_relayed_age_s)
            if peer_id == self.self_id or age_s >= self.dead_after_s:
                continue
            held = self.view.get(peer_id)
            if held is not None:
                if held.address == address:
                    self.view.upsert(ViewEntry(peer_id, address, now_s - age_s))
                else:
                    self.ignored["address_conflict"] += 1
            elif peer_id not in self.candidates:
                if pending >= self.max_new_per_shuffle:
                    self.ignored["new_over_limit"] += 1
                elif self.note_candidate(peer_id, address, now_s, sender, via_seed=via_seed):
                    pending += 1

    def note_candidate(self, peer_id: int, address: str, now_s: float, source: int | None = None,
                       *, via_seed: bool = False) -> bool:
        """Remember ``peer_id`` as a candidate to probe; False (counted) when the table is full,
        the id is a member or itself, or the address is not tcp."""
        if peer_id == self.self_id or peer_id in self.view or parse_tcp_address(address) is None:
            return False
        if peer_id not in self.candidates and len(self.candidates) >= self.max_candidates:
            self.ignored["candidates_full"] += 1
            return False
        self.candidates[peer_id] = Candidate(peer_id, address, source, now_s, via_seed)
        return True

    def drop_candidate(self, peer_id: int) -> None:
        """Forget a candidate (its probe failed or it may not be dialled)."""
        self.candidates.pop(peer_id, None)

    def confirm(self, peer_id: int, address: str, now_s: float) -> list[int]:
        """``peer_id`` proved it answers at ``address``: it joins the view (the entries we just
        shipped, then the oldest, make room). Returns the ids evicted for it."""
        self.candidates.pop(peer_id, None)
        if peer_id == self.self_id:
            return []
        self.view.remove(peer_id)  # a confirmation is first-hand: it may move the address
        self.view.upsert(ViewEntry(peer_id, address, now_s))
        dropped = self.view.trim(evict_first=self._shipped - {peer_id})
        self._departed.update(dropped)
        return dropped

    def heard(self, peer_id: int, address: str | None, now_s: float) -> bool:
        """First-hand news: a message from member ``peer_id`` arrived now. Refreshes it when the
        address (if given) is the confirmed one; True when ``peer_id`` is a member."""
        held = self.view.get(peer_id)
        if held is None:
            return False
        if address is None or address == held.address:
            self.view.upsert(ViewEntry(peer_id, held.address, now_s))
        return True

    def is_member(self, peer_id: int) -> bool:
        """Whether ``peer_id`` is in the (confirmed) view."""
        return peer_id in self.view

    def expire(self, now_s: float) -> list[int]:
        """Drop peers silent for more than ``dead_after_s`` (and stale candidates); return the
        peers' ids."""
        dead = [e.peer_id for e in self.view.entries() if e.age_s(now_s) > self.dead_after_s]
        for p in dead:
            self.view.remove(p)
        self._departed.update(dead)
        for c in [c for c in self.candidates.values() if now_s - c.heard_s > self.dead_after_s]:
            del self.candidates[c.peer_id]
        return dead

    def take_departed(self) -> list[int]:
        """Ids that left the view since the last call and are not back in it."""
        out = sorted(p for p in self._departed if p not in self.view)
        self._departed.clear()
        return out

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
