"""The receive budget: how many bytes a peer may hold in messages it has received and not handled.

libzmq queues what arrives per connection: at most ``recv_hwm`` messages (``RCVHWM``) in each
inbound pipe plus the one being read, each at most ``MAXMSGSIZE`` bytes. A per-connection bound
is no bound while connections are free, so the communication thread also bounds *them*:
:class:`ConnectionGuard` watches the ROUTER's monitor events and cuts every accepted connection
past ``max_connections`` (it shuts the connection's TCP socket down; libzmq then closes it as it
would a peer that hung up). Together::

    held bytes <= max_connections * (recv_hwm + 1) * max_message_bytes

and the peer sizes ``max_message_bytes`` from its model (:func:`message_bytes_for`): twice the
largest encoding of the model its codecs can make, plus the largest header such a message may
carry, so an honest message always fits and a model-sized flood costs a bounded amount.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from gossipml.comm.config import TransportConfig
from gossipml.comm.sockets import parse_routing_id
from gossipml.schema import MAX_INFO_BYTES
from gossipml.wire import MAX_ENTRY_BYTES

__all__ = ["message_bytes_for", "header_slack_bytes", "ConnectionGuard", "Receiver", "CUT_REASON",
           "READ_BATCH"]

log = logging.getLogger("gossipml.comm.transport")

CUT_REASON = "connection_limit"  # TransportStats.errors key of a connection cut past the limit
_FRAME0_FIXED_BYTES = 4096  # frame 0 besides info and the tensor entries: keys, kind, ids
READ_BATCH = 64  # messages read per wake-up, so sends and commands are not starved


def header_slack_bytes(n_tensors: int) -> int:
    """The largest frame 0 a message of ``n_tensors`` tensors passes the wire checks with: the
    info map, every tensor entry at its bound, and the fixed keys."""
    return MAX_INFO_BYTES + n_tensors * MAX_ENTRY_BYTES + _FRAME0_FIXED_BYTES


def message_bytes_for(payload_bytes: int, n_tensors: int) -> int:
    """``max_message_bytes`` for a model whose largest encoding is ``payload_bytes`` bytes over
    ``n_tensors`` tensors: twice that, plus :func:`header_slack_bytes` (small messages such as
    heartbeats and membership views fit in the slack alone)."""
    return 2 * int(payload_bytes) + header_slack_bytes(n_tensors)


class ConnectionGuard:
    """Counts a ROUTER's open inbound connections from its monitor events and cuts the newest
    ones past ``limit``. Owner: the transport; communication thread only."""

    def __init__(self, router: zmq.Socket, limit: int) -> None:
        self.limit = limit
        self.monitor = router.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._router = router
        self._open: dict[int, None] = {}  # fds of accepted connections, oldest first
        self.cut = 0  # connections cut past the limit
        self.peak = 0  # most connections open at once (after cutting)

    @property
    def open(self) -> int:
        """Inbound connections open now, as far as the events read so far say."""
        return len(self._open)

    def on_events(self) -> int:
        """Read every pending monitor event, then cut connections past the limit (newest first);
        returns how many were cut now."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._open[fd] = None
            else:
                self._open.pop(fd, None)
        cut = 0
        while len(self._open) > self.limit:
            fd = next(reversed(self._open))
            del self._open[fd]
            cut += _shut_down(fd)
        self.cut += cut
        self.peak = max(self.peak, len(self._open))
        return cut

    def close(self) -> None:
        """Stop monitoring (before the ROUTER closes)."""
        try:
            self._router.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)


def _shut_down(fd: int) -> int:
    """Shut the TCP connection on ``fd`` down both ways without closing libzmq's descriptor (it
    sees the hang-up and closes it itself); 1 when done, 0 when ``fd`` is no socket any more."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return 0
    try:
        sock.shutdown(socket.SHUT_RDWR)
        return 1
    except OSError:
        return 0
    finally:
        sock.detach()  # the descriptor stays libzmq's


class Receiver:
    """The ROUTER's reading side within the receive budget: the connection guard, the size limit
    and the sender's identity (bound to its key under CURVE, else its routing id's claim; see
    ``comm/transport.py``). Owner: the transport; communication thread only. ``stats`` is the
    transport's ``TransportStats``; ``on_frames`` its inbound handler."""

    def __init__(self, router: zmq.Socket, config: TransportConfig, stats: Any,
                 on_frames: Callable[[int | None, list], None], curve: Any | None, *,
                 guard: bool = True) -> None:
        self.router = router
        self.limit_bytes = config.message_limit_bytes
        self.stats = stats
        self.on_frames = on_frames
        self.curve = curve
        # without a guard (an inproc ROUTER, reachable from this process only) nothing is cut
        self.guard = ConnectionGuard(router, config.connection_limit) if guard else None

    @property
    def sockets(self) -> tuple[zmq.Socket, ...]:
        """What to poll for input: the ROUTER and its monitor (when guarded)."""
        return (self.router,) if self.guard is None else (self.router, self.guard.monitor)

    def on_ready(self, events: dict) -> None:
        """Handle what ``poll`` found ready among :attr:`sockets`."""
        guard = self.guard
        if guard is not None and guard.monitor in events and guard.on_events():
            self.stats.errors[CUT_REASON] = guard.cut
        if self.router in events:
            self.read()

    def read(self) -> None:
        """Hand up to READ_BATCH waiting messages to ``on_frames`` (an oversized one as ``[]``;
        one without a key-bound sender under CURVE is dropped, ``errors["unauthenticated"]``)."""
        for _ in range(READ_BATCH):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            body = frames[1:]
            nbytes = sum(len(f) for f in body)
            self.stats.messages_received += 1
            self.stats.bytes_received += nbytes
            sender = self.sender_of(frames)
            if sender is None and self.curve is not None:  # believe nothing of it
                self.stats.errors["unauthenticated"] = \
                    self.stats.errors.get("unauthenticated", 0) + 1
                continue
            if nbytes > self.limit_bytes:
                self.stats.oversized += 1
                self.on_frames(sender, [])  # the handler counts an empty message as too large
                continue
            self.on_frames(sender, body)

    def sender_of(self, frames: list) -> int | None:
        """The sender's peer id: bound to its key under CURVE, else its routing id's claim."""
        if self.curve is not None:
            return self.curve.authenticated_sender(frames[-1])
        return parse_routing_id(frames[0].bytes)

    def close(self) -> None:
        """Stop the guard and close the ROUTER (no linger: nothing is sent on it)."""
        if self.guard is not None:
            self.guard.close()
        self.router.close(linger=0)
