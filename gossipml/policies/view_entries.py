"""Membership entries and endpoints received from the network: the checks, nothing else.

An entry is ``[peer_id, address, age_s]`` (:mod:`gossipml.policies.membership`); an address is
``tcp://host:port`` only, host an IP or a hostname of a strict character set, port 1..65535. The
sender is untrusted: a bad entry raises ValueError naming it. Pure.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any

__all__ = ["parse_entries", "parse_tcp_address", "MAX_WIRE_ENTRIES", "MAX_ADDRESS_CHARS"]

#: The most entries one shuffle or reply may carry; longer lists are refused as hostile.
MAX_WIRE_ENTRIES = 256
#: The longest address accepted from the network.
MAX_ADDRESS_CHARS = 256
_MAX_PEER_ID = 2**31 - 1
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_TCP = re.compile(r"tcp://(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253}):([0-9]{1,5})")


def parse_tcp_address(address: Any) -> tuple[str, int] | None:
    """``(host, port)`` of ``tcp://host:port``, host an IP (IPv6 in brackets, returned without
    them) or a hostname of letters, digits, dots and hyphens, port 1..65535; None otherwise.
    Unspecified (``0.0.0.0``, ``::``), multicast and broadcast hosts are refused: nobody listens
    there. ``localhost`` reads as ``127.0.0.1``."""
    if not isinstance(address, str) or len(address) > MAX_ADDRESS_CHARS:
        return None
    m = _TCP.fullmatch(address)
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        return None
    host = m.group(1).strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if m.group(1).startswith("[") or _HOSTNAME.fullmatch(host) is None \
                or host.replace(".", "").isdigit():
            return None
        return ("127.0.0.1" if host.lower() == "localhost" else host.lower()), int(m.group(2))
    if ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255":
        return None
    return str(ip), int(m.group(2))


def parse_entries(entries: Any) -> list[tuple[int, str, float]]:
    """Check entries received from the network; return ``(peer_id, address, age_s)`` tuples.

    Raises ValueError naming the first bad entry: the sender is untrusted.
    """
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"membership entries must be a list, got {type(entries).__name__}")
    if len(entries) > MAX_WIRE_ENTRIES:
        raise ValueError(f"membership message has {len(entries)} entries, "
                         f"more than the limit {MAX_WIRE_ENTRIES}")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, (list, tuple)) or len(e) != 3:
            raise ValueError(f"membership entry #{i} must be [peer_id, address, age_s], got {e!r:.80}")
        peer_id, address, age_s = e
        if isinstance(peer_id, bool) or not isinstance(peer_id, int) or not 0 <= peer_id <= _MAX_PEER_ID:
            raise ValueError(f"membership entry #{i}: peer_id must be an int in 0..{_MAX_PEER_ID}, "
                             f"got {peer_id!r:.40}")
        if parse_tcp_address(address) is None:
            raise ValueError(f"membership entry #{i}: address must be tcp://host:port (host an IP "
                             f"or a hostname, port 1..65535, at most {MAX_ADDRESS_CHARS} chars), "
                             f"got {address!r:.80}")
        if isinstance(age_s, bool) or not isinstance(age_s, (int, float)) or not math.isfinite(age_s) \
                or age_s < 0:
            raise ValueError(f"membership entry #{i}: age_s must be a finite number >= 0, got {age_s!r:.40}")
        out.append((peer_id, address, float(age_s)))
    return out
