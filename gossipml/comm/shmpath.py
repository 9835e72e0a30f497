"""The same-host path as the transport and the peer use it: one segment pool per destination.

Between two peers on one host (both addresses loopback, ``ipc://`` or the same host name), a
message whose data frames add up to at least ``[transport] shm_min_bytes`` travels in the form of
:func:`gossipml.comm.shm.offload`: ``[SHM_TAG, header, msgpack(handle)]``, the data in a shared-memory
segment (see ``docs/wire.md``). The receiver resolves the handle (every field checked), copies the
buffers out, and sends the sender an ``ack`` whose ``info["shm_release"]`` frees the segment;
:func:`gossipml.wire.unpack` then checks the message exactly as if it had come over the socket.
When the sender's pool is full the frames go over the socket as usual.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Sequence

from gossipml.comm.shm import ShmReader, ShmWriter, offload, offloaded_handle, release_token

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

    def __init__(self, min_bytes: int, max_segments: int = 6) -> None:
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
    """Receiver side (communication thread only). Buffers are read in place, no copy: the
    segment is mapped read-write and belongs to the receiver until every tensor decoded from it
    is gone; then ``release(token)`` is called (from whichever thread drops the last one) so the
    sender can reuse the segment."""

    def __init__(self) -> None:
        self._reader = ShmReader(writable=True)

    def resolve(self, frames: Sequence[Any], release: Callable[[dict[str, Any]], None]
                ) -> list[Any]:
        """Wire frames for ``unpack``: plain messages unchanged; an offloaded one as
        ``[header, *views into the segment]``, with ``release`` armed for when they are gone.
        Raises :class:`gossipml.comm.shm.ShmError` for a malformed or stale handle."""
        handle = offloaded_handle(frames)
        if handle is None:
            return list(frames)
        base, views = self._reader.read_arrays(handle)
        weakref.finalize(base, release, release_token(handle))
        return [frames[1], *views]

    def close(self) -> None:
        """Unmap every segment no view still uses."""
        self._reader.close()
