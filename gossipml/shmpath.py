"""The same-host path as the transport and the peer use it: one segment pool per destination.

Between two peers on one host (both addresses loopback, ``ipc://`` or the same host name), a
message whose data frames add up to at least ``[transport] shm_min_bytes`` travels in the form of
:func:`gossipml.shm.offload`: ``[SHM_TAG, header, msgpack(handle)]``, the data in a shared-memory
segment (see ``docs/wire.md``). The receiver resolves the handle (every field checked), copies the
buffers out, and sends the sender an ``ack`` whose ``info["shm_release"]`` frees the segment;
:func:`gossipml.wire.unpack` then checks the message exactly as if it had come over the socket.
When the sender's pool is full the frames go over the socket as usual.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gossipml.shm import ShmReader, ShmWriter, offload, release_token, resolve

__all__ = ["ShmOutbox", "ShmInbox", "same_host"]

_LOOPBACK = ("127.", "localhost", "[::1]")


def _host(address: str) -> str | None:
    if address.startswith("ipc://"):
        return "<local>"
    if not address.startswith("tcp://"):
        return None  # inproc: same process, nothing to gain
    host = address[len("tcp://"):].rpartition(":")[0]
    return "<local>" if host.startswith(_LOOPBACK) else host


def same_host(a: str, b: str) -> bool:
    """Whether two peer addresses are on one host (loopback/ipc both, or the same host name)."""
    ha = _host(a)
    return ha is not None and ha == _host(b)


class ShmOutbox:
    """Sender side (communication thread only): one :class:`ShmWriter` per destination."""

    def __init__(self, min_bytes: int, max_segments: int = 4) -> None:
        self.min_bytes = min_bytes
        self.max_segments = max_segments
        self._writers: dict[int, ShmWriter] = {}
        self.offloaded = 0

    def offload(self, dest: int, frames: Sequence[Any]) -> list[Any]:
        """The frames for ``dest``: the shared-memory form when large enough and a segment is
        free (the data is copied into it now), else ``frames`` unchanged."""
        writer = self._writers.get(dest)
        if writer is None:
            writer = self._writers[dest] = ShmWriter(max_segments=self.max_segments)
        out = offload(frames, writer, min_bytes=self.min_bytes)
        self.offloaded += len(out) == 3 and out[1] is frames[0]
        return out

    def release(self, dest: int, token: Any) -> bool:
        """Free the segment named by ``token`` (from ``dest``'s ack); False if unknown or stale."""
        writer = self._writers.get(dest)
        return writer is not None and writer.release(token)

    def close(self) -> None:
        """Unlink every segment."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class ShmInbox:
    """Receiver side (communication thread only)."""

    def __init__(self) -> None:
        self._reader = ShmReader()

    def resolve(self, frames: Sequence[Any]) -> tuple[list[Any], dict[str, Any] | None]:
        """Wire frames for ``unpack`` (buffers copied out of the segment, so it can be released
        at once) and the release token to send back, or ``(frames, None)`` for a plain message.
        Raises :class:`gossipml.shm.ShmError` for a malformed or stale handle."""
        out, handle = resolve(frames, self._reader)
        if handle is None:
            return out, None
        # numpy copies: large allocations get huge pages (madvise), ~2x a bytearray's speed here
        copies = [np.array(np.frombuffer(v, dtype=np.uint8)) for v in out[1:]]
        return [out[0], *copies], release_token(handle)

    def close(self) -> None:
        """Unmap every segment."""
        self._reader.close()
