"""An in-memory transport: in-process peers exchange frames without sockets (for unit tests).

In the spirit of httpx's ``MockTransport`` and Flower's ``InMemoryGrid``: a
:class:`MemoryNetwork` knows every started :class:`MemoryTransport` by peer id and hands frames
from one to another on the caller's thread, at once (``queued=False``) or when the test calls
:meth:`MemoryNetwork.run_until_idle` (``queued=True``, to hold messages back or reorder time).
Frames are copied on the way, as ZeroMQ would, so a receiver never sees a sender's buffers.
``call`` runs its function at once: the caller's thread stands in for the communication thread.
Ticks (heartbeats, membership shuffles) run only when the test calls :meth:`MemoryNetwork.tick`.
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Mapping, Sequence

from gossipml.comm.config import TransportConfig
from gossipml.comm.transport import InboundHandler, Outgoing, TransportStats

__all__ = ["MemoryNetwork", "MemoryTransport", "MemoryFrame"]


class MemoryFrame:
    """A received frame: the ``.buffer``/``.bytes`` a ``zmq.Frame`` offers, over owned bytes."""

    __slots__ = ("bytes",)

    def __init__(self, data: bytes) -> None:
        self.bytes = data

    @property
    def buffer(self) -> memoryview:
        """The frame's bytes, without a copy."""
        return memoryview(self.bytes)

    def __len__(self) -> int:
        return len(self.bytes)


class MemoryNetwork:
    """Every in-process peer's :class:`MemoryTransport`, and the frames in flight between them."""

    def __init__(self, *, queued: bool = False) -> None:
        self.queued = queued
        self._ports: dict[int, MemoryTransport] = {}
        self._in_flight: collections.deque[tuple[int, int, list[bytes]]] = collections.deque()

    def transport(self, peer_id: int, bind: str, neighbors: Mapping[int, str],
                  config: TransportConfig, on_frames: InboundHandler, *,
                  on_tick: Callable[[], None] | None = None,
                  shm_dests: frozenset[int] = frozenset(), **_ignored: object) -> MemoryTransport:
        """A transport on this network, called like ``Transport(...)`` (so a ``Peer`` can take
        ``transport_factory=network.transport``); socket-only options are ignored."""
        return MemoryTransport(peer_id, self, neighbors, on_frames, config=config,
                               on_tick=on_tick)

    def attach(self, port: MemoryTransport) -> None:
        """Make ``port`` reachable by its peer id (``MemoryTransport.start`` calls this)."""
        if self._ports.get(port.peer_id) not in (None, port):
            raise ValueError(f"peer id {port.peer_id} is already on this network; close the "
                             "other transport first or use another id")
        self._ports[port.peer_id] = port

    def detach(self, port: MemoryTransport) -> None:
        """Make ``port`` unreachable (``close`` calls this); frames for it are dropped."""
        if self._ports.get(port.peer_id) is port:
            del self._ports[port.peer_id]

    def is_reachable(self, peer_id: int) -> bool:
        """True when a started transport has ``peer_id``."""
        return peer_id in self._ports

    def send(self, sender: int, dest: int, frames: list[bytes]) -> None:
        """Deliver (or, queued, hold) one message from ``sender`` to ``dest``."""
        if self.queued:
            self._in_flight.append((sender, dest, frames))
        else:
            self._deliver(sender, dest, frames)

    def run_until_idle(self, max_messages: int = 100_000) -> int:
        """Deliver held messages (and those they cause) until none is left; how many."""
        count = 0
        while self._in_flight and count < max_messages:
            self._deliver(*self._in_flight.popleft())
            count += 1
        return count

    @property
    def in_flight(self) -> int:
        """Messages held back (queued mode)."""
        return len(self._in_flight)

    def tick(self) -> None:
        """Run every started transport's tick once (heartbeats, shuffles)."""
        for port in list(self._ports.values()):
            port.tick()

    def _deliver(self, sender: int, dest: int, frames: list[bytes]) -> None:
        port = self._ports.get(dest)
        if port is not None:
            port.receive(sender, frames)


class MemoryTransport:
    """One peer's end of a :class:`MemoryNetwork`; the same methods as ``Transport``.
    Owner: the peer that built it; every method runs on the caller's thread."""

    def __init__(self, peer_id: int, network: MemoryNetwork, neighbors: Mapping[int, str],
                 on_frames: InboundHandler, *, config: TransportConfig | None = None,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.peer_id = peer_id
        self.network = network
        self.config = config or TransportConfig()
        self.stats = TransportStats()
        self._neighbors = dict(neighbors)
        self._on_frames = on_frames
        self._on_tick = on_tick
        self._alive = False

    @property
    def address(self) -> str:
        """``memory://<id>``."""
        return f"memory://{self.peer_id}"

    @property
    def alive(self) -> bool:
        """True between ``start`` and ``close``."""
        return self._alive

    @property
    def error(self) -> BaseException | None:
        """Never set: the in-memory stand-in runs on the caller's thread."""
        return None

    @property
    def shm_dests(self) -> frozenset[int]:
        """None: in-memory frames never go through shared memory."""
        return frozenset()

    @property
    def shm_offloaded(self) -> int:
        """Always 0."""
        return 0

    @property
    def neighbors(self) -> dict[int, str]:
        """Peers this transport sends to: id -> address."""
        return dict(self._neighbors)

    def start(self) -> MemoryTransport:
        """Join the network."""
        self.network.attach(self)
        self._alive = True
        return self

    def close(self) -> None:
        """Leave the network (what is queued for this peer is dropped on delivery)."""
        self._alive = False
        self.network.detach(self)

    def submit(self, outgoing: Outgoing) -> None:
        """Build the frames here and send a copy to each destination, counted as ``Transport``
        counts (an unknown or unreachable neighbour is a drop, a failing build a ``send_failed``)."""
        try:
            frames = [bytes(memoryview(f)) for f in outgoing.make_frames()]
        except Exception as exc:  # a bad encode loses this message, as on the real thread
            self.stats.send_failed += 1
            self._count_error(f"encode_{type(exc).__name__}")
            frames = None
        if frames is not None:
            nbytes = sum(len(f) for f in frames)
            for dest in outgoing.dests:
                self._send_one(dest, frames, nbytes)
        if outgoing.on_done is not None:
            outgoing.on_done()

    def _send_one(self, dest: int, frames: list[bytes], nbytes: int) -> None:
        if dest not in self._neighbors:
            self._count_error("unknown_neighbor")
        elif not self._alive or not self.network.is_reachable(dest):
            self.stats.send_dropped += 1
        else:
            self.stats.messages_sent += 1
            self.stats.bytes_sent += nbytes
            self.stats.last_sent_s[dest] = time.monotonic()
            self.network.send(self.peer_id, dest, list(frames))

    def receive(self, sender: int, frames: Sequence[bytes]) -> None:
        """Hand one message to the inbound handler (empty frames: it was over the size limit)."""
        nbytes = sum(len(f) for f in frames)
        self.stats.messages_received += 1
        self.stats.bytes_received += nbytes
        if nbytes > self.config.message_limit_bytes:
            self.stats.oversized += 1
            self._on_frames(sender, [])
            return
        self._on_frames(sender, [MemoryFrame(f) for f in frames])

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` now, on the caller's thread."""
        fn()

    def connect(self, peer_id: int, address: str) -> None:
        """Add a neighbour."""
        self._neighbors[peer_id] = address

    def disconnect(self, peer_id: int) -> None:
        """Drop a neighbour."""
        self._neighbors.pop(peer_id, None)

    def shm_probe(self, dest: int) -> str | None:
        """No shared memory in memory: never a probe."""
        return None

    def shm_confirm(self, dest: int, answer: object) -> bool:
        """No shared memory in memory: False."""
        return False

    def shm_release(self, dest: int, token: object) -> bool:
        """Nothing is ever offloaded: False."""
        return False

    def tick(self) -> None:
        """Run the owner's tick once."""
        if self._alive and self._on_tick is not None:
            self._on_tick()

    def _count_error(self, key: str) -> None:
        self.stats.errors[key] = self.stats.errors.get(key, 0) + 1
