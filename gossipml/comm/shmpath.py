"""The same-host path as the transport and the peer use it: one segment pool per destination.

A message for a destination served through shared memory, whose data frames add up to at least
``[transport] shm_min_bytes``, travels in the form of :func:`gossipml.comm.shm.offload`:
``[SHM_TAG, header, msgpack(handle)]``, the data in a segment file (see ``docs/wire.md``). The
receiver (:class:`ShmInbox`) checks the handle and the file, copies the buffers out into memory it
owns (no mapping: a truncated file is a counted error, never SIGBUS), and at once sends the sender
an ``ack`` whose ``info["shm_release"]`` frees the segment; :func:`gossipml.wire.unpack` then
checks the message exactly as if it had come over the socket. When the sender cannot use a
segment (pool full, no space in the segment directory, ...) the frames go over the socket, and
:class:`ShmOutbox` counts why. A segment not released within ``release_timeout_s`` is unlinked;
a destination whose segments expire without one release ever is served over the socket again.

Which destinations get shared memory. Two peers share a segment directory only if one can read
the files the other makes, which address strings cannot tell (containers and namespaces have
loopback addresses and their own ``/dev/shm``). The probe handshake tells it:

1. sender A, on its communication thread: ``name = outbox.probe(B)`` makes a 0600 probe file
   holding a random nonce; A sends B ``info={"shm_probe": name}`` (e.g. in a heartbeat);
2. receiver B: ``answer = answer_probe(name)`` (the nonce, or None when B cannot read that file);
   B sends A ``info={"shm_probe_answer": answer}`` when it is not None;
3. A: ``outbox.confirm(B, answer)`` compares it with the nonce in constant time, and on a match
   enables B and removes the probe file.

The peer offers its probe with its heartbeats (``peer.outbound.probe_shm``) and answers others'
in its inbound side; a destination gets shared memory only once it has read a probe back, and a
receiver takes handles only from senders whose probe it read. Nothing is guessed from addresses.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import re
import secrets
import time
from typing import Any, Callable, Sequence

from gossipml.comm.shm import FALLBACK_REASONS, ShmReader, ShmWriter, envelope, \
    offloaded_handle, release_token
from gossipml.comm.shmfile import ShmError, create_segment, open_segment, segment_dir

__all__ = ["ShmOutbox", "ShmInbox", "make_probe", "answer_probe", "remove_probe",
           "probe_confirmed", "PROBE_PATTERN"]

log = logging.getLogger("gossipml.comm.shmpath")

PROBE_PATTERN = re.compile(r"gml-probe-[0-9a-f]{16}")
_NONCE_BYTES = 16



# ---- the probe handshake ------------------------------------------------------------------------
def make_probe(directory: str | None = None) -> tuple[str, bytes]:
    """A new probe file (0600, O_EXCL) holding a random nonce: ``(name, nonce)``. Send the name,
    keep the nonce; remove the file with :func:`remove_probe`."""
    directory = segment_dir(directory)
    name, nonce = f"gml-probe-{secrets.token_hex(8)}", secrets.token_bytes(_NONCE_BYTES)
    fd = create_segment(os.path.join(directory, name), _NONCE_BYTES)
    try:
        os.pwrite(fd, nonce, 0)
    finally:
        os.close(fd)
    return name, nonce


def answer_probe(name: Any, directory: str | None = None) -> bytes | None:
    """The nonce in the probe file ``name`` (untrusted), or None when it is not a probe name or
    the file is not one this process could read segments from (missing, foreign, wrong size)."""
    if not isinstance(name, str) or PROBE_PATTERN.fullmatch(name) is None:
        return None
    try:
        fd = open_segment(segment_dir(directory), name, _NONCE_BYTES)
    except ShmError:
        return None
    try:
        nonce = os.pread(fd, _NONCE_BYTES, 0)
    finally:
        os.close(fd)
    return nonce if len(nonce) == _NONCE_BYTES else None


def probe_confirmed(nonce: bytes, answer: Any) -> bool:
    """Whether an (untrusted) answer is the probe's nonce, compared in constant time."""
    return isinstance(answer, bytes) and hmac.compare_digest(nonce, answer)


def remove_probe(name: str, directory: str | None = None) -> None:
    """Unlink a probe file made by :func:`make_probe` (gone already: nothing to do)."""
    if PROBE_PATTERN.fullmatch(name) is None:
        raise ValueError(f"{name!r} is not a probe name; pass what make_probe returned")
    try:
        os.unlink(os.path.join(segment_dir(directory), name))
    except FileNotFoundError:
        pass


# ---- sender and receiver sides --------------------------------------------------------------------
class ShmOutbox:
    """Sender side (communication thread only): which destinations get shared memory, one
    :class:`ShmWriter` per destination, their probes, and counters of every fallback."""

    def __init__(self, min_bytes: int, max_segments: int = 6, *, dests: Sequence[int] = (),
                 release_timeout_s: float = 30.0, directory: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_bytes = min_bytes
        self.max_segments = max_segments
        self.release_timeout_s = release_timeout_s
        self.directory = segment_dir(directory)
        self.counts: collections.Counter[str] = collections.Counter()
        self._clock = clock
        self._dests = frozenset(dests)
        self._writers: dict[int, ShmWriter] = {}
        self._released_any: set[int] = set()
        self._probes: dict[int, tuple[str, bytes]] = {}

    @property
    def dests(self) -> frozenset[int]:
        """Destinations served through shared memory now (replaced, never mutated: any thread
        may read it)."""
        return self._dests

    @property
    def offloaded(self) -> int:
        """Messages sent through shared memory so far."""
        return self.counts["offloaded"]

    @property
    def in_flight(self) -> int:
        """Segments sent and not yet released by their receivers."""
        return sum(w.in_flight for w in self._writers.values())

    def enable(self, dest: int) -> None:
        """Serve ``dest`` through shared memory from the next message on."""
        self._dests = self._dests | {dest}

    def disable(self, dest: int) -> None:
        """Send to ``dest`` over the socket again, and unlink its segments."""
        self._dests = self._dests - {dest}
        writer = self._writers.pop(dest, None)
        if writer is not None:
            writer.close()

    def offload(self, dest: int, frames: Sequence[Any]) -> list[Any]:
        """The frames for ``dest``: the shared-memory form when it is served so, the data large
        enough and a segment usable (the data is copied into it now), else ``frames``."""
        data = frames[1:]
        if dest not in self._dests or sum(memoryview(f).nbytes for f in data) < self.min_bytes:
            return list(frames)
        writer = self._writers.get(dest)
        if writer is None:
            writer = self._writers[dest] = ShmWriter(
                max_segments=self.max_segments, release_timeout_s=self.release_timeout_s,
                directory=self.directory, clock=self._clock)
        self._note_expired(dest, writer.reclaim())
        if dest not in self._dests:
            return list(frames)
        try:
            handle = writer.write(data)
        except ShmError as exc:
            if exc.reason not in FALLBACK_REASONS:
                raise
            self.counts[f"fallback_{exc.reason}"] += 1
            return list(frames)
        self.counts["offloaded"] += 1
        return envelope(frames[0], handle)

    def _note_expired(self, dest: int, n: int) -> None:
        if n <= 0:
            return
        self.counts["expired"] += n
        if dest not in self._released_any:  # it never read one: it cannot see our files
            log.warning("shared memory to %d: %d segment(s) never released; using the socket",
                        dest, n)
            self.counts["disabled"] += 1
            self.disable(dest)

    def release(self, dest: int, token: Any) -> bool:
        """Free the segment named by ``token`` (from ``dest``'s ack); False if unknown or stale."""
        writer = self._writers.get(dest)
        if writer is None or not writer.release(token):
            return False
        self._released_any.add(dest)
        return True

    def probe(self, dest: int) -> str:
        """The name of the probe file for ``dest`` (made on first call, kept until confirmed)."""
        if dest not in self._probes:
            self._probes[dest] = make_probe(self.directory)
        return self._probes[dest][0]

    def confirm(self, dest: int, answer: Any) -> bool:
        """Check ``dest``'s answer to its probe; on a match enable ``dest`` and remove the probe."""
        probe = self._probes.get(dest)
        if probe is None or not probe_confirmed(probe[1], answer):
            self.counts["probe_refused"] += 1
            return False
        remove_probe(self._probes.pop(dest)[0], self.directory)
        self.enable(dest)
        return True

    def close(self) -> None:
        """Unlink every segment and probe file."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for name, _ in self._probes.values():
            remove_probe(name, self.directory)
        self._probes.clear()


class ShmInbox:
    """Receiver side (communication thread only): copies an offloaded message's buffers out of the
    sender's segment (checked: our uid, 0600, its size) and releases the segment at once."""

    def __init__(self, directory: str | None = None) -> None:
        self._reader = ShmReader(directory=directory)

    def resolve(self, frames: Sequence[Any], release: Callable[[dict[str, Any]], None]
                ) -> list[Any]:
        """Wire frames for ``unpack``: plain messages unchanged; an offloaded one as
        ``[header, *copies of its buffers]``, ``release(token)`` called once the copy is done.
        Raises :class:`gossipml.comm.shmfile.ShmError` for a bad handle or segment."""
        handle = offloaded_handle(frames)
        if handle is None:
            return list(frames)
        copies = self._reader.read_copy(handle)
        release(release_token(handle))
        return [frames[1], *copies]

    def close(self) -> None:
        """Nothing is held between messages; kept so the peer closes every part alike."""
        self._reader.close()
