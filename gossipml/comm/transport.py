"""Sockets and the one communication thread that owns them.

ZeroMQ sockets are not thread-safe, so every socket of a peer lives on one thread: a ROUTER bound
on the peer's address for everything inbound, and a DEALER per neighbour for everything outbound.
Other threads talk to it through a queue and a wake-up pipe; nothing they call blocks on the
network. High-water marks, ``MAXMSGSIZE``, linger, send timeouts and ``IMMEDIATE`` (no queueing
for a neighbour that is not connected, so a dead neighbour cannot pin memory) are always set.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import zmq

from gossipml.policies.emulation import LinkPolicy
from gossipml.comm.config import TransportConfig
from gossipml.comm.shmpath import ShmOutbox

__all__ = ["Transport", "TransportStats", "Outgoing", "routing_id", "parse_routing_id"]

log = logging.getLogger("gossipml.comm.transport")

#: Frames received from the network, as zmq.Frame objects (``frame.buffer`` is a memoryview).
InboundHandler = Callable[[int | None, list], None]


def routing_id(peer_id: int) -> bytes:
    """The DEALER routing id a peer announces itself with: ``b"gml:<id>"``."""
    return b"gml:%d" % peer_id


def parse_routing_id(ident: bytes) -> int | None:
    """Peer id from a routing id, or None for a socket that is not a gossipml DEALER."""
    if not ident.startswith(b"gml:") or len(ident) > 24:
        return None
    try:
        return int(ident[4:])
    except ValueError:
        return None


@dataclass
class Outgoing:
    """One message for some neighbours. ``make_frames`` runs on the communication thread (so the
    encoding overlaps training); ``on_done`` runs there once libzmq no longer reads the frames."""

    dests: tuple[int, ...]
    make_frames: Callable[[], Sequence[object]]
    on_done: Callable[[], None] | None = None


@dataclass
class TransportStats:
    """Counters the communication thread keeps; read them from any thread (plain ints)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    send_dropped: int = 0  # neighbour not connected or its queue full: the message was dropped
    emulated_drops: int = 0
    send_failed: int = 0  # building the frames raised (e.g. a codec error): message lost
    oversized: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Transport:
    """The communication thread of one peer and every socket it owns."""

    def __init__(
        self,
        peer_id: int,
        bind: str,
        neighbors: Mapping[int, str],
        config: TransportConfig,
        on_frames: InboundHandler,
        *,
        context: zmq.Context | None = None,
        link_policy: LinkPolicy | None = None,
        on_tick: Callable[[], None] | None = None,
        curve: object | None = None,  # CURVE (gossipml.comm.security): setup_server(router) before
        # bind, setup_client(dealer, peer_id) before connect; None runs in the clear
        shm_dests: frozenset[int] = frozenset(),
    ) -> None:
        self.peer_id = peer_id
        self.config = config
        self.stats = TransportStats()
        self._bind = bind
        self._neighbors = dict(neighbors)
        self._on_frames = on_frames
        self._on_tick = on_tick
        self._link_policy = link_policy
        self._curve = curve
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._address: str | None = None
        self._error: BaseException | None = None
        self._delayed: list[tuple[float, int, int, Sequence[object]]] = []
        self._seq = itertools.count()
        self._link_counts: dict[int, int] = {}
        self._shm = ShmOutbox(config.shm_min_bytes, dests=shm_dests) if config.shm else None

    # ---- public, any thread -------------------------------------------------------------
    @property
    def address(self) -> str:
        """The endpoint the ROUTER is bound to (the real port when bound to port 0)."""
        if self._address is None:
            raise RuntimeError("transport not started: call start() first")
        return self._address

    def start(self, timeout_s: float = 10.0) -> "Transport":
        """Start the communication thread and wait (bounded) until the ROUTER is bound."""
        self._thread = threading.Thread(target=self._run, name=f"gossipml-comm-{self.peer_id}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"peer {self.peer_id}: transport did not start in {timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"peer {self.peer_id}: cannot bind {self._bind!r}: {self._error}") \
                from self._error
        return self

    def submit(self, outgoing: Outgoing) -> None:
        """Queue a message; returns at once (training never waits on the network)."""
        self._command(("send", outgoing))

    def connect(self, peer_id: int, address: str) -> None:
        """Add a neighbour, or move one to a new address."""
        self._command(("connect", peer_id, address))

    def disconnect(self, peer_id: int) -> None:
        """Close the DEALER to a neighbour (no-op if there is none)."""
        self._command(("disconnect", peer_id))

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the communication thread (for work that touches sockets' state)."""
        self._command(("call", fn))

    def shm_release(self, dest: int, token: object) -> bool:
        """Free a shared-memory segment ``dest`` has copied out (call on the communication
        thread, i.e. from the inbound handler)."""
        return self._shm is not None and self._shm.release(dest, token)

    def enable_shm(self, dest: int) -> None:
        """Send to ``dest`` through shared memory from now on (no-op with ``[transport] shm``
        off); a confirmed probe (``shm_outbox.confirm``) does it on its own."""
        if self._shm is not None:
            self.call(lambda: self._shm.enable(dest))  # type: ignore[union-attr]

    @property
    def shm_dests(self) -> frozenset[int]:
        """Neighbours reached through shared memory (same host, and ``[transport] shm`` on)."""
        return self._shm.dests if self._shm is not None else frozenset()

    @property
    def shm_offloaded(self) -> int:
        """Messages sent through shared memory so far."""
        return self._shm.offloaded if self._shm is not None else 0

    @property
    def shm_outbox(self) -> ShmOutbox | None:
        """The shared-memory sender side (None with shm off): ``counts[key]`` from any thread;
        ``probe(dest)`` and ``confirm(dest, answer)`` on the communication thread only."""
        return self._shm

    @property
    def alive(self) -> bool:
        """True while the communication thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """What ended the communication thread, if an exception did (None otherwise)."""
        return self._error

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (after flushing within the linger time) and close every socket."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("peer %d: communication thread did not stop in %.1f s",
                          self.peer_id, timeout_s)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._own_context and not (self._thread and self._thread.is_alive()):
            self._ctx.term()

    def __enter__(self) -> "Transport":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- communication thread -----------------------------------------------------------
    def _command(self, cmd: tuple) -> None:
        self._commands.put(cmd)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is already pending) or closed

    def _run(self) -> None:
        try:
            router = self._make_router()
        except zmq.ZMQError as exc:
            self._error = exc
            self._ready.set()
            return
        dealers: dict[int, zmq.Socket] = {}
        pending: list[tuple[list, Callable[[], None]]] = []
        try:
            for pid, addr in self._neighbors.items():
                dealers[pid] = self._make_dealer(addr, pid)
            self._ready.set()
            poller = zmq.Poller()
            poller.register(router, zmq.POLLIN)
            poller.register(self._wake_r, zmq.POLLIN)
            poll_ms = max(1, int(self.config.poll_interval_s * 1000))
            while not self._stop.is_set():
                events = dict(poller.poll(self._poll_timeout_ms(poll_ms)))
                if self._wake_r in events:
                    self._drain_wake()
                if router in events:
                    self._receive_all(router)
                self._run_commands(dealers, pending)
                self._send_due(dealers)
                pending = self._finish_sent(pending)
                if self._on_tick is not None:
                    self._on_tick()
            self._run_commands(dealers, pending)  # flush what was queued before close()
        except Exception as exc:  # never die silently: record, log, and let the peer see it
            self._error = exc
            log.exception("peer %d: communication thread failed", self.peer_id)
            self._ready.set()
        finally:
            linger_ms = int(self.config.linger_s * 1000)
            for sock in dealers.values():
                sock.close(linger=linger_ms)
            router.close(linger=0)
            for _, done in pending:
                done()
            if self._shm is not None:
                self._shm.close()

    def _make_router(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.RCVHWM, self.config.recv_hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer takes its routing id back
        if self._curve is not None:
            self._curve.setup_server(sock)  # type: ignore[attr-defined]
        sock.bind(self._bind)
        self._address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _make_dealer(self, address: str, peer_id: int) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, routing_id(self.peer_id))
        sock.setsockopt(zmq.SNDHWM, self.config.send_hwm)
        sock.setsockopt(zmq.SNDTIMEO, int(self.config.send_timeout_s * 1000))
        sock.setsockopt(zmq.LINGER, int(self.config.linger_s * 1000))
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        if self._curve is not None:
            self._curve.setup_client(sock, peer_id)  # type: ignore[attr-defined]
        sock.connect(address)
        return sock

    def _poll_timeout_ms(self, default_ms: int) -> int:
        if not self._delayed:
            return default_ms
        due_ms = int((self._delayed[0][0] - time.monotonic()) * 1000)
        return max(0, min(default_ms, due_ms))

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except (BlockingIOError, OSError):
            pass

    def _receive_all(self, router: zmq.Socket) -> None:
        for _ in range(64):  # bounded, so sends and commands are not starved
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            ident, body = frames[0].bytes, frames[1:]
            nbytes = sum(len(f) for f in body)
            self.stats.messages_received += 1
            self.stats.bytes_received += nbytes
            sender = parse_routing_id(ident)
            if nbytes > self.config.max_message_bytes:
                self.stats.oversized += 1
                self._on_frames(sender, [])  # the handler counts an empty message as too large
                continue
            self._on_frames(sender, body)

    def _run_commands(self, dealers: dict[int, zmq.Socket], pending: list) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            if cmd[0] == "send":
                self._start_send(cmd[1], dealers, pending)
            elif cmd[0] == "connect":
                _, pid, addr = cmd
                if pid in dealers:
                    dealers.pop(pid).close(linger=0)
                dealers[pid] = self._make_dealer(addr, pid)
                self._neighbors[pid] = addr
            elif cmd[0] == "disconnect":
                sock = dealers.pop(cmd[1], None)
                if sock is not None:
                    sock.close(linger=0)
                self._neighbors.pop(cmd[1], None)
            elif cmd[0] == "call":
                cmd[1]()

    def _start_send(self, out: Outgoing, dealers: dict[int, zmq.Socket], pending: list) -> None:
        try:
            frames = list(out.make_frames())
        except Exception as exc:  # a bad encode loses this message, not the thread
            self.stats.send_failed += 1
            self._count_error(f"encode_{type(exc).__name__}")
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
                tracker = self._send_now(dealers, dest, wire, nbytes)
                if tracker is not None:
                    trackers.append(tracker)
        if out.on_done is not None:
            pending.append((trackers, out.on_done))

    def _link_decision(self, dest: int) -> tuple[bool, float]:
        if self._link_policy is None:
            return False, 0.0
        n = self._link_counts.get(dest, 0)
        self._link_counts[dest] = n + 1
        return self._link_policy(dest, n)

    def _send_now(self, dealers: dict[int, zmq.Socket], dest: int, frames: Sequence[object],
                  nbytes: int) -> zmq.MessageTracker | None:
        sock = dealers.get(dest)
        if sock is None:
            self._count_error("unknown_neighbor")
            return None
        if self._neighbors.get(dest, "").startswith("inproc://"):
            # inproc passes buffers by reference: copy, so the receiver owns what it holds and
            # the sender's snapshot is free at once
            frames = [bytes(memoryview(f)) if memoryview(f).nbytes > 1024 else f for f in frames]
        try:
            tracker = sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False, track=True)
        except zmq.Again:
            self.stats.send_dropped += 1  # not connected (IMMEDIATE) or queue full (HWM)
            return None
        except zmq.ZMQError as exc:
            self._count_error(f"send_{exc.errno}")
            log.warning("peer %d: send to %d failed: %s", self.peer_id, dest, exc)
            return None
        self.stats.messages_sent += 1
        self.stats.bytes_sent += nbytes
        return tracker

    def _send_due(self, dealers: dict[int, zmq.Socket]) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, dest, frames = heapq.heappop(self._delayed)
            self._send_now(dealers, dest, frames, sum(memoryview(f).nbytes for f in frames))

    @staticmethod
    def _finish_sent(pending: list) -> list:
        still = []
        for trackers, done in pending:
            if all(t.done for t in trackers):
                done()
            else:
                still.append((trackers, done))
        return still

    def _count_error(self, key: str) -> None:
        self.stats.errors[key] = self.stats.errors.get(key, 0) + 1
