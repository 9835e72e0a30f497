"""The send side of a transport: one DEALER per neighbour and every message on its way out.

Owner: the transport; the communication thread that serves it (its own, or a hub's) is the only
caller. A message's frames are built here (``Outgoing.make_frames``: the encoding overlaps
training), dropped or delayed by the link emulation, offloaded to shared memory for a same-host
neighbour, and sent without blocking: a neighbour that is not connected (``IMMEDIATE``) or whose
queue is full (high-water mark) costs a counted drop, never a wait. ``on_done`` runs once libzmq
no longer reads the frames.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from typing import Callable, Mapping, Sequence

import zmq

from gossipml.comm.config import TransportConfig
from gossipml.comm.port import Outgoing, TransportStats
from gossipml.comm.shmpath import ShmOutbox
from gossipml.comm.sockets import make_dealer
from gossipml.policies.emulation import LinkPolicy

__all__ = ["Outlinks"]

log = logging.getLogger("gossipml.comm.transport")


class Outlinks:
    """The DEALERs of one peer, its sends in flight and its delayed (emulated) sends."""

    def __init__(self, peer_id: int, context: zmq.Context, config: TransportConfig,
                 neighbors: Mapping[int, str], stats: TransportStats, *,
                 curve: object | None, link_policy: LinkPolicy | None,
                 shm: ShmOutbox | None) -> None:
        self.peer_id = peer_id
        self.config = config
        self.stats = stats
        self.neighbors = dict(neighbors)
        self._ctx = context
        self._curve = curve
        self._link_policy = link_policy
        self._shm = shm
        self._dealers: dict[int, zmq.Socket] = {}
        self._pending: list[tuple[list, Callable[[], None]]] = []
        self._delayed: list[tuple[float, int, int, Sequence[object]]] = []
        self._seq = itertools.count()
        self._link_counts: dict[int, int] = {}

    @property
    def busy(self) -> bool:
        """Sends in flight or delayed: serve again soon."""
        return bool(self._pending or self._delayed)

    @property
    def next_due_s(self) -> float | None:
        """When the first delayed send is due (``time.monotonic()``), or None."""
        return self._delayed[0][0] if self._delayed else None

    def open(self) -> None:
        """A DEALER to every neighbour known at start."""
        for pid, addr in self.neighbors.items():
            self._dealers[pid] = self._dealer(addr, pid)

    def connect(self, peer_id: int, address: str) -> None:
        """A (new) DEALER to ``peer_id`` at ``address``."""
        if peer_id in self._dealers:
            self._dealers.pop(peer_id).close(linger=0)
        self._dealers[peer_id] = self._dealer(address, peer_id)
        self.neighbors[peer_id] = address

    def disconnect(self, peer_id: int) -> None:
        """Close the DEALER to ``peer_id`` (no-op if there is none)."""
        sock = self._dealers.pop(peer_id, None)
        if sock is not None:
            sock.close(linger=0)
        self.neighbors.pop(peer_id, None)

    def send(self, out: Outgoing) -> None:
        """Build ``out``'s frames and send them to each destination (or drop or delay them)."""
        try:
            frames = list(out.make_frames())
        except Exception as exc:  # a bad encode loses this message, not the thread
            self.stats.send_failed += 1
            self.count_error(f"encode_{type(exc).__name__}")
            log.error("peer %d: building a message failed: %r", self.peer_id, exc)
            if out.on_done is not None:
                out.on_done()
            return
        nbytes = sum(memoryview(f).nbytes for f in frames)
        trackers = []
        for dest in out.dests:
            drop, delay_s = self._link_decision(dest)
            if drop:
                self.stats.emulated_drops += 1
            elif delay_s > 0:  # copy: the caller may reuse its buffers once on_done has run
                copies = [bytes(memoryview(f)) for f in frames]
                heapq.heappush(self._delayed, (time.monotonic() + delay_s, next(self._seq),
                                               dest, copies))
            else:
                # big data for a same-host dest: copied to shm right here (else frames as is)
                wire = self._shm.offload(dest, frames) if self._shm is not None else frames
                self._send_now(dest, wire, nbytes, trackers)
        if out.on_done is not None:
            self._pending.append((trackers, out.on_done))

    def send_due(self) -> None:
        """Send the delayed messages whose time has come."""
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, dest, frames = heapq.heappop(self._delayed)
            self._send_now(dest, frames, sum(memoryview(f).nbytes for f in frames), None)

    def finish_sent(self) -> None:
        """Run ``on_done`` of every message libzmq has finished reading."""
        if not self._pending:
            return
        still = []
        for trackers, done in self._pending:
            if all(t.done for t in trackers):
                done()
            else:
                still.append((trackers, done))
        self._pending = still

    def close(self) -> None:
        """Close every DEALER (within the linger time) and release what is still held."""
        linger_ms = int(self.config.linger_s * 1000)
        for sock in self._dealers.values():
            sock.close(linger=linger_ms)
        self._dealers.clear()
        for _, done in self._pending:
            done()
        self._pending = []
        self._delayed = []

    def count_error(self, key: str) -> None:
        """Count one error of kind ``key`` in the transport's stats."""
        self.stats.errors[key] = self.stats.errors.get(key, 0) + 1

    def _dealer(self, address: str, peer_id: int) -> zmq.Socket:
        return make_dealer(self._ctx, self.config, self._curve, self.peer_id, peer_id, address)

    def _link_decision(self, dest: int) -> tuple[bool, float]:
        if self._link_policy is None:
            return False, 0.0
        n = self._link_counts.get(dest, 0)
        self._link_counts[dest] = n + 1
        return self._link_policy(dest, n)

    def _send_now(self, dest: int, frames: Sequence[object], nbytes: int,
                  trackers: list | None) -> None:
        """Send without blocking; a tracker for the frames libzmq still reads goes to
        ``trackers`` (inproc sends copy every frame instead: the receiver may hold a message
        unread for long, and the sender's snapshot must be free at once)."""
        sock = self._dealers.get(dest)
        if sock is None:
            self.count_error("unknown_neighbor")
            return
        inproc = self.neighbors.get(dest, "").startswith("inproc://")
        if inproc:
            frames = [bytes(memoryview(f)) for f in frames]
        try:
            tracker = sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False,
                                          track=not inproc)
        except zmq.Again:
            self.stats.send_dropped += 1  # not connected (IMMEDIATE) or queue full (HWM)
            return
        except zmq.ZMQError as exc:
            self.count_error(f"send_{exc.errno}")
            log.warning("peer %d: send to %d failed: %s", self.peer_id, dest, exc)
            return
        self.stats.messages_sent += 1
        self.stats.bytes_sent += nbytes
        self.stats.last_sent_s[dest] = time.monotonic()
        if tracker is not None and trackers is not None:
            trackers.append(tracker)
