"""The sockets of a peer's communication thread, made with every option always set.

The inbound ROUTER: receive high-water mark, ``MAXMSGSIZE``, no linger, and no
``ROUTER_HANDOVER`` (a duplicate routing id never takes a link over). Each outbound DEALER: a fresh
routing id, send high-water mark and timeout, linger, ``IMMEDIATE`` (no queueing for a neighbour
that is not connected, so a dead one cannot pin memory), reconnect and heartbeat intervals. CURVE
is set up on both when configured. Routing ids carry no authority (see ``comm/transport.py``).
"""

from __future__ import annotations

import os

import zmq

from gossipml.comm.config import TransportConfig

__all__ = ["routing_id", "parse_routing_id", "make_router", "make_dealer"]


def routing_id(peer_id: int, nonce: bytes | None = None) -> bytes:
    """A DEALER routing id, ``b"gml:<id>:<nonce>"``: the nonce (random hex unless given) makes
    every connection's id unique, so none collides with, or takes over, another's."""
    return b"gml:%d:%s" % (peer_id, nonce if nonce is not None else os.urandom(8).hex().encode())


def parse_routing_id(ident: bytes) -> int | None:
    """The (unauthenticated) peer id in a routing id ``gml:<id>[:<nonce>]``; None for others."""
    if not ident.startswith(b"gml:") or len(ident) > 64:
        return None
    try:
        return int(ident[4:].split(b":", 1)[0])
    except ValueError:
        return None


def make_router(ctx: zmq.Context, config: TransportConfig, curve: object | None) -> zmq.Socket:
    """The inbound ROUTER, not yet bound (CURVE server set up first when ``curve`` is given)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, config.recv_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, config.message_limit_bytes)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 0)  # a duplicate routing id never takes a link over
    if curve is not None:
        curve.setup_server(sock)  # type: ignore[attr-defined]
    return sock


def make_dealer(ctx: zmq.Context, config: TransportConfig, curve: object | None, self_id: int,
                peer_id: int, address: str) -> zmq.Socket:
    """A DEALER from ``self_id`` connected to neighbour ``peer_id`` at ``address``."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, routing_id(self_id))
    sock.setsockopt(zmq.SNDHWM, config.send_hwm)
    sock.setsockopt(zmq.SNDTIMEO, int(config.send_timeout_s * 1000))
    sock.setsockopt(zmq.LINGER, int(config.linger_s * 1000))
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
    if curve is not None:
        curve.setup_client(sock, peer_id)  # type: ignore[attr-defined]
    sock.connect(address)
    return sock
