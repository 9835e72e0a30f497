"""Addresses: where a peer binds for the address it advertises, and free loopback ports."""

from __future__ import annotations

import socket

__all__ = ["bind_address", "free_ports"]


def bind_address(address: str) -> str:
    """Where to bind for an advertised address: as given for IPs/localhost/ipc, ``*`` otherwise."""
    if not address.startswith("tcp://"):
        return address
    host, _, port = address[len("tcp://"):].rpartition(":")
    is_ip = host.replace(".", "").isdigit() or host.startswith("[") or host in ("localhost", "*")
    return address if is_ip else f"tcp://*:{port}"


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free right now on ``host`` (held open together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
