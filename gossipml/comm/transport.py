"""Sockets and the one communication thread that owns them.

ZeroMQ sockets are not thread-safe, so every socket of a peer lives on one thread: a ROUTER bound
on the peer's address for everything inbound, and a DEALER per neighbour for everything outbound.
Other threads talk to it through a queue and a wake-up pipe; nothing they call blocks on the
network. High-water marks, ``MAXMSGSIZE``, linger, send timeouts and ``IMMEDIATE`` (no queueing
for a neighbour that is not connected, so a dead neighbour cannot pin memory) are always set, and
inbound connections past ``max_connections`` are cut (the receive budget: ``comm/budget.py``).

The sender handed inbound is, under CURVE, the peer id bound to the sender's key (a message
without one is dropped, ``errors["unauthenticated"]``); in the clear, the id its routing id claims
(as untrusted as the header). Routing ids carry no authority: each DEALER's is fresh
(``gml:<id>:<random>``) and there is no ``ROUTER_HANDOVER``, so a second connection presenting a
connected peer's id is ignored, never handed its link, while a restarted peer is heard at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
from typing import Callable, Mapping, Sequence

import zmq

from gossipml.policies.emulation import LinkPolicy
from gossipml.comm.budget import Receiver
from gossipml.comm.config import TransportConfig
from gossipml.comm.port import Outgoing, TransportStats
from gossipml.comm.shmpath import ShmOutbox
from gossipml.comm.sockets import make_dealer, make_router, parse_routing_id, routing_id

__all__ = ["Transport", "TransportStats", "Outgoing", "routing_id", "parse_routing_id"]

log = logging.getLogger("gossipml.comm.transport")

#: Frames received from the network, as zmq.Frame objects (``frame.buffer`` is a memoryview).
InboundHandler = Callable[[int | None, list], None]


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
        self.receiver: Receiver | None = None  # the ROUTER's reading side, once started
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

    def shm_probe(self, dest: int) -> str | None:
        """The probe file name to send ``dest`` (communication thread); None when shm is off or
        ``dest`` is already confirmed (see ``comm.shmpath``: same host by handshake)."""
        if self._shm is None or dest in self._shm.dests:
            return None
        return self._shm.probe(dest)

    def shm_confirm(self, dest: int, answer: object) -> bool:
        """``dest``'s answer to its probe (communication thread): on a match, send it through
        shared memory from now on."""
        return self._shm is not None and self._shm.confirm(dest, answer)

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
        self.receiver = receiver = Receiver(router, self.config, self.stats, self._on_frames,
                                            self._curve)
        try:
            for pid, addr in self._neighbors.items():
                dealers[pid] = self._make_dealer(addr, pid)
            self._ready.set()
            poller = zmq.Poller()
            for sock in (self._wake_r, *receiver.sockets):
                poller.register(sock, zmq.POLLIN)
            poll_ms = max(1, int(self.config.poll_interval_s * 1000))
            while not self._stop.is_set():
                events = dict(poller.poll(self._poll_timeout_ms(poll_ms)))
                if self._wake_r in events:
                    self._drain_wake()
                receiver.on_ready(events)
                self._run_commands(dealers, pending)
                self._send_due(dealers)
                pending = self._finish_sent(pending)
                if self._on_tick is not None:
                    self._on_tick()
            self._run_commands(dealers, pending)  # flush what was queued before close()
            self._await_shm_releases(poller, receiver)
        except Exception as exc:  # never die silently: record, log, and let the peer see it
            self._error = exc
            log.exception("peer %d: communication thread failed", self.peer_id)
            self._ready.set()
        finally:
            linger_ms = int(self.config.linger_s * 1000)
            for sock in dealers.values():
                sock.close(linger=linger_ms)
            receiver.close()
            for _, done in pending:
                done()
            if self._shm is not None:
                self._shm.close()

    def _await_shm_releases(self, poller: zmq.Poller, receiver: Receiver) -> None:
        """Before the segments are unlinked, let receivers copy out what is in flight (their
        release acks arrive here), for at most ``linger_s``: else the last model sent before a
        close can find its segment gone (``shm_no_segment``)."""
        end = time.monotonic() + self.config.linger_s
        while self._shm is not None and self._shm.in_flight and time.monotonic() < end:
            receiver.on_ready(dict(poller.poll(10)))

    def _make_router(self) -> zmq.Socket:
        sock = make_router(self._ctx, self.config, self._curve)
        sock.bind(self._bind)
        self._address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _make_dealer(self, address: str, peer_id: int) -> zmq.Socket:
        return make_dealer(self._ctx, self.config, self._curve, self.peer_id, peer_id, address)

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
