"""A topology drawn from a live membership view: peers that know only a few seed addresses.

``[membership] enabled = true`` replaces the fixed graph of ``[topology]``: the peer keeps a
Cyclon view (:mod:`gossipml.policies.membership`), shuffles it with a random view member (or a seed) every
``shuffle_interval_s``, and each round pushes its model to ``fanout`` peers sampled from the live
view. A peer that falls silent leaves every view after ``dead_after_s``; a new or restarted peer
joins through any seed. The membership state is shared by the training thread (sampling) and
the communication thread (shuffles), so every access holds one lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from gossipml.policies.membership import Membership, MembershipConfig
from gossipml.comm.port import Port
from gossipml.comm.transport import Outgoing
from gossipml.wire import Message, pack

__all__ = ["SwarmTopology", "SwarmLink", "seed_dealers"]


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


def seed_dealers(seeds: tuple[str, ...], own_address: str) -> dict[int, str]:
    """Seeds have no known peer id yet: their DEALERs get the ids -1, -2, ..."""
    return {-(i + 1): addr for i, addr in enumerate(seeds) if addr != own_address}


class SwarmLink:
    """The swarm side of a peer's communication thread: learning members from messages,
    answering and starting shuffles. Every method runs on the communication thread."""

    def __init__(self, swarm: SwarmTopology, transport: Port, self_id: int, address: str,
                 seeds: dict[int, str], reject: Callable[[int, str, str], None]) -> None:
        self.swarm = swarm
        self.transport = transport
        self.self_id = self_id
        self.address = address
        self._seed_ids = {addr: sid for sid, addr in seeds.items()}
        self._reject = reject
        self.connected: set[int] = set()

    def note_member(self, msg: Message) -> None:
        """A message that names its sender's address is first-hand news of the sender; a peer
        seen for the first time gets a DEALER."""
        address = msg.info.get("address")
        if not isinstance(address, str) or "://" not in address or len(address) > 256:
            return
        self.swarm.heard(msg.sender, address)
        seed_id = self._seed_ids.get(address)
        if seed_id is not None and seed_id < 0:
            # the seed's real id is known now: one DEALER per peer (two with one routing id would
            # make its ROUTER hand the connection back and forth)
            self.transport.disconnect(seed_id)
            self._seed_ids[address] = msg.sender
        if msg.sender not in self.connected:
            self.connected.add(msg.sender)
            self.transport.connect(msg.sender, address)

    def on_view(self, msg: Message, clock: int) -> None:
        """A shuffle (answered with a reply) or the reply to ours."""
        try:
            if msg.info.get("reply"):
                self.swarm.on_reply(msg.info.get("entries"))
                return
            entries = self.swarm.on_shuffle(msg.info.get("entries"), msg.sender)
        except ValueError as exc:
            return self._reject(msg.sender, "bad_view", str(exc))
        self._send(msg.sender, clock, entries, reply=True)

    def shuffle(self, clock: int) -> None:
        """Start a shuffle with a view member or a seed when one is due; connect a DEALER to
        every live member learnt second-hand (from shuffles) so pushes and heartbeats reach it."""
        due = self.swarm.due_shuffle()
        if due is None:
            return
        for j, addr in self.swarm.live().items():
            if j not in self.connected:
                self.connected.add(j)
                self.transport.connect(j, addr)
        address, entries = due
        by_address = {a: j for j, a in self.swarm.live().items()}
        dest = by_address.get(address, self._seed_ids.get(address))
        if dest is not None:
            self._send(dest, clock, entries, reply=False)

    def _send(self, dest: int, clock: int, entries: list[Any], *, reply: bool) -> None:
        msg = Message(kind="view", sender=self.self_id, round=clock,
                      info={"entries": entries, "reply": reply, "address": self.address})
        self.transport.submit(Outgoing((dest,), lambda: pack(msg)))
