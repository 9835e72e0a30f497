"""Heartbeats: a peer's liveness, clock and who it hears, sent on the communication thread.

A regular beat goes to each neighbour nothing was sent to for ``[pacing] heartbeat_interval_s``
(a model carries the clock and proves liveness as well as a beat does), so a sync run whose
rounds are shorter than the interval sends almost none. During start-up, until every neighbour
is heard both ways (it hears us and we hear it), beats go every :data:`STARTUP_HEARTBEAT_S`, but
only to the neighbours not yet linked and, for two more beats, to the newly linked (they learn
from those that we hear them); while nobody new is heard each start-up beat comes 1.5 times later
than the one before (up to the regular interval): a thousand peers starting in one process beat
only where a beat still helps, and no faster than the process can read them. A swarm peer (membership) beats its whole live view every interval, and the goodbye
goes to every neighbour. Owner: the peer; ``tick`` and ``send`` run on the communication thread.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from gossipml.comm.mailbox import Mailbox
from gossipml.comm.port import Outgoing, Port
from gossipml.peer.outbound import Outbound
from gossipml.peer.swarm import SwarmTopology
from gossipml.policies.pacing import Schedule
from gossipml.wire import Message, pack

__all__ = ["Heartbeats", "STARTUP_HEARTBEAT_S"]

STARTUP_HEARTBEAT_S = 0.1  # until every neighbour is heard both ways, beat at least this often


class Heartbeats:
    """When and to whom a peer beats; ``sent`` counts beats, ``linked`` says start-up is over."""

    def __init__(self, peer_id: int, *, schedule: Schedule, neighbors: tuple[int, ...],
                 mailbox: Mailbox, transport: Port, outbound: Outbound, address: str,
                 swarm: SwarmTopology | None, clock: Callable[[], int],
                 done: Callable[[], bool]) -> None:
        self.peer_id = peer_id
        self.interval_s = schedule.heartbeat_interval_s
        self._startup_every_s = min(self.interval_s, STARTUP_HEARTBEAT_S)
        self._progress: tuple[int, int] = (-1, -1)  # start-up: (heard, linked) neighbours
        self.neighbors = neighbors
        self.sent = 0
        self.linked = False  # every neighbour heard, and hearing us
        self._mailbox, self._transport, self._outbound = mailbox, transport, outbound
        self._address, self._swarm, self._clock, self._done = address, swarm, clock, done
        # a swarm beats its view each interval; fixed neighbours are looked at 4 times as often
        self._check_s = self.interval_s if swarm is not None else self.interval_s / 4
        self._checked_s = float("-inf")
        self._startup_s = float("-inf")
        self._linked_at: dict[int, float] = {}

    def tick(self) -> None:
        """Beat if one is due: regular beats first, else a start-up beat to the unlinked."""
        now = time.monotonic()
        unlinked = self._unlinked(now) if not self.linked else ()
        if now - self._checked_s >= self._check_s:
            self._checked_s = now
            due = self._due(now)
            if due is None or due:
                self._startup_s = now
                self.send(due)
                return
        if not self.linked and now - self._startup_s >= self._startup_every_s:
            self._startup_s = now
            # back off (x1.5 a beat, up to the regular interval) while nobody new is heard: a
            # thousand peers starting at once would otherwise beat faster than one process reads
            self._startup_every_s = min(self.interval_s, self._startup_every_s * 1.5)
            self.send(unlinked)

    def _due(self, now: float) -> tuple[int, ...] | None:
        """Neighbours nothing was sent to for an interval (None: a swarm's whole view)."""
        if self._swarm is not None:
            return None
        last = self._transport.stats.last_sent_s
        return tuple(d for d in self.neighbors
                     if now - last.get(d, float("-inf")) >= self.interval_s)

    def _unlinked(self, now: float) -> tuple[int, ...] | None:
        """Neighbours a start-up beat should reach (None: a swarm's whole view); sets
        ``linked`` when there are none."""
        if self._swarm is not None:
            self.linked = bool(self._swarm.live())
            return None
        want = set(self.neighbors)
        linked = self._mailbox.linked(self.peer_id, want)
        progress = (len(want & self._mailbox.snapshot()[2].keys()), len(linked))
        if progress != self._progress:  # someone new heard or linked: beat fast again
            self._progress = progress
            self._startup_every_s = min(self.interval_s, STARTUP_HEARTBEAT_S)
        for j in linked:
            self._linked_at.setdefault(j, now)
        recent = {j for j in linked if now - self._linked_at[j] < 2 * STARTUP_HEARTBEAT_S}
        self.linked = linked == want and not recent
        return tuple(sorted((want - linked) | recent))

    def send(self, only: tuple[int, ...] | None = None) -> None:
        """A beat to every neighbour (the goodbye, and a swarm's), or to ``only``."""
        self.sent += 1
        heard = self._mailbox.snapshot()[2]
        info: dict[str, Any] = {"done": self._done(), "hears": sorted(heard)}
        dests = self.neighbors if only is None else only
        if self._swarm is not None:
            info["address"] = self._address
            dests = tuple(sorted(self._swarm.live()))
        msg = Message(kind="heartbeat", sender=self.peer_id, round=self._clock(), info=info)
        if dests:
            self._transport.submit(Outgoing(dests, lambda: pack(msg)))
            if not self._done() and not self._address.startswith("inproc://"):
                # same host? a probe handshake decides, not the addresses (inproc: one process)
                self._outbound.probe_shm(tuple(dests))
