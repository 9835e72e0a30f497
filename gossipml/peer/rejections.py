"""Refused messages: one counter by reason, each refusal logged and emitted as an event."""

from __future__ import annotations

import collections
import logging

from gossipml.events import EventLog

__all__ = ["Rejections"]

log = logging.getLogger("gossipml.peer.peer")  # the logger name the refusals always had

DETAIL_CHARS = 200


class Rejections:
    """Counts refused messages by reason (``counts``, exact), logs each and emits a ``rejected``
    event. Owner: the peer; writer: the communication thread (the inbound side and the swarm link,
    which run there, are handed this object and call it)."""

    def __init__(self, peer_id: int, events: EventLog | None = None) -> None:
        self.peer_id = peer_id
        self.events = events
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, sender: int | None, reason: str, detail: str = "") -> None:
        """Count one refusal of a message from ``sender`` for ``reason`` (a counter key)."""
        self.counts[reason] += 1
        log.warning("peer %d: rejected a message from %s: %s (%s)", self.peer_id, sender, reason,
                    detail[:DETAIL_CHARS])
        if self.events is not None:
            self.events.emit("rejected", sender=sender, reason=reason,
                             detail=detail[:DETAIL_CHARS])

    @property
    def total(self) -> int:
        """Refusals of every reason."""
        return sum(self.counts.values())
