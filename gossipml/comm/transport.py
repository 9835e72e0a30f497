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

With a :class:`~gossipml.comm.hub.CommHub` (``hub=``), the transport has no thread of its own:
the hub's one thread serves many peers' sockets in one process (``[run] mode = "threads"``), by
the same steps (:meth:`Transport.open_sockets`, :meth:`~Transport.serve`, ...).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Callable, Mapping

import zmq

from gossipml.policies.emulation import LinkPolicy
from gossipml.comm.budget import Receiver
from gossipml.comm.config import TransportConfig
from gossipml.comm.port import Outgoing, TransportStats
from gossipml.comm.shmpath import ShmOutbox
from gossipml.comm.sending import Outlinks
from gossipml.comm.sockets import make_router, parse_routing_id, routing_id

if TYPE_CHECKING:
    from gossipml.comm.hub import CommHub

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
        hub: CommHub | None = None,  # serve on this shared thread instead of one of its own
    ) -> None:
        self.peer_id = peer_id
        self.config = config
        self.stats = TransportStats()
        self._bind = bind
        self._on_frames = on_frames
        self._on_tick = on_tick
        self._curve = curve
        self._own_context = context is None
        self._hub = hub
        if hub is not None:
            self._own_context, self._ctx = False, hub.context
        else:
            self._ctx = context or zmq.Context()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe() if hub is None else (-1, -1)
        if hub is None:
            os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._closed = threading.Event()  # with a hub: it has torn this transport down
        self._address: str | None = None
        self._error: BaseException | None = None
        self.receiver: Receiver | None = None  # the ROUTER's reading side, once started
        self._shm = ShmOutbox(config.shm_min_bytes, dests=shm_dests) if config.shm else None
        self._out = Outlinks(peer_id, self._ctx, config, neighbors, self.stats, curve=curve,
                             link_policy=link_policy, shm=self._shm)

    # ---- public, any thread -------------------------------------------------------------
    @property
    def address(self) -> str:
        """The endpoint the ROUTER is bound to (the real port when bound to port 0)."""
        if self._address is None:
            raise RuntimeError("transport not started: call start() first")
        return self._address

    def start(self, timeout_s: float = 10.0) -> "Transport":
        """Start serving (its own communication thread, or attached to its hub) and wait
        (bounded) until the ROUTER is bound."""
        if self._hub is not None:
            self._hub.attach(self)
        else:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"gossipml-comm-{self.peer_id}")
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
        """True while the communication thread serves this transport."""
        if self._hub is not None:
            return (self._ready.is_set() and not self._closed.is_set() and self._error is None
                    and self._hub.alive)
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """What ended the communication thread, if an exception did (None otherwise)."""
        return self._error

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop serving (after flushing within the linger time) and close every socket."""
        self._stop.set()
        if self._hub is not None:
            if self._ready.is_set() and not self._closed.is_set():
                self._hub.detach(self)
                if not self._closed.wait(timeout_s):
                    log.error("peer %d: the hub did not close this transport in %.1f s",
                              self.peer_id, timeout_s)
        else:
            self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("peer %d: communication thread did not stop in %.1f s",
                          self.peer_id, timeout_s)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
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
        if self._hub is not None:
            self._hub.wake(self)
        else:
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is already pending) or closed

    def _run(self) -> None:
        """Its own communication thread: open, serve until close(), flush, tear down."""
        try:
            sockets = self.open_sockets()
        except zmq.ZMQError as exc:
            self._error = exc
            self._ready.set()
            return
        try:
            self._ready.set()
            poller = zmq.Poller()
            for sock in (self._wake_r, *sockets):
                poller.register(sock, zmq.POLLIN)
            poll_ms = max(1, int(self.config.poll_interval_s * 1000))
            while not self._stop.is_set():
                events = dict(poller.poll(self._poll_timeout_ms(poll_ms)))
                if self._wake_r in events:
                    self._drain_wake()
                self.serve(events, tick=True)
            self.flush(poller)
        except Exception as exc:  # never die silently: record, log, and let the peer see it
            self._error = exc
            log.exception("peer %d: communication thread failed", self.peer_id)
            self._ready.set()
        finally:
            self.teardown()

    # ---- the steps a driver (its own thread above, or a CommHub) runs on its thread ------
    def open_sockets(self) -> tuple[zmq.Socket, ...]:
        """Bind the ROUTER and connect a DEALER per neighbour; the sockets to poll for input."""
        router = self._make_router()
        guard = not self._bind.startswith("inproc://")  # inproc: only this process can connect
        self.receiver = Receiver(router, self.config, self.stats, self._on_frames, self._curve,
                                 guard=guard)
        self._out.open()
        return self.receiver.sockets

    def serve(self, events: dict, *, tick: bool) -> None:
        """One turn: read what ``poll`` found ready, run queued commands, send what is due,
        finish completed sends, and (``tick``) let the peer run its periodic work."""
        assert self.receiver is not None
        self.receiver.on_ready(events)
        self._run_commands()
        self._out.send_due()
        self._out.finish_sent()
        if tick and self._on_tick is not None:
            self._on_tick()

    @property
    def busy(self) -> bool:
        """Sends in flight or delayed: the driver should serve again soon."""
        return self._out.busy

    @property
    def draining(self) -> bool:
        """Shared-memory segments sent and not yet released by their receiver."""
        return self._shm is not None and bool(self._shm.in_flight)

    @property
    def linger_s(self) -> float:
        """How long a close waits for what is in flight."""
        return self.config.linger_s

    @property
    def next_due_s(self) -> float | None:
        """When the first delayed (emulated) send is due (``time.monotonic()``), or None."""
        return self._out.next_due_s

    def flush(self, poller: zmq.Poller | None) -> None:
        """Send what was queued before close(); with a poller, let shared-memory releases in."""
        self._run_commands()
        if poller is not None:
            self._await_shm_releases(poller, self.receiver)

    def teardown(self) -> None:
        """Close every socket (DEALERs within the linger time) and release what is held."""
        self._out.close()
        if self.receiver is not None:
            self.receiver.close()
        if self._shm is not None:
            self._shm.close()

    def opened(self, error: BaseException | None = None) -> None:
        """The driver has opened the sockets (or failed to: ``error``)."""
        self._error = error
        self._ready.set()

    def ended(self, error: BaseException | None = None) -> None:
        """The driver has torn this transport down (``error``: what ended its serving)."""
        if error is not None:
            self._error = error
        self._ready.set()
        self._closed.set()

    def _await_shm_releases(self, poller: zmq.Poller, receiver: Receiver | None) -> None:
        """Before the segments are unlinked, let receivers copy out what is in flight (their
        release acks arrive here), for at most ``linger_s``: else the last model sent before a
        close can find its segment gone (``shm_no_segment``)."""
        end = time.monotonic() + self.config.linger_s
        while (receiver is not None and self._shm is not None and self._shm.in_flight
               and time.monotonic() < end):
            receiver.on_ready(dict(poller.poll(10)))

    def _make_router(self) -> zmq.Socket:
        sock = make_router(self._ctx, self.config, self._curve)
        sock.bind(self._bind)
        self._address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _poll_timeout_ms(self, default_ms: int) -> int:
        due = self._out.next_due_s
        if due is None:
            return default_ms
        return max(0, min(default_ms, int((due - time.monotonic()) * 1000)))

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except (BlockingIOError, OSError):
            pass

    def _run_commands(self) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            if cmd[0] == "send":
                self._out.send(cmd[1])
            elif cmd[0] == "connect":
                self._out.connect(cmd[1], cmd[2])
            elif cmd[0] == "disconnect":
                self._out.disconnect(cmd[1])
            elif cmd[0] == "call":
                cmd[1]()
