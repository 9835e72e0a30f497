"""The transport interface the parts of a peer use, and a call that waits on the owning thread.

:class:`~gossipml.comm.transport.Transport` (ZeroMQ, one communication thread) and
:class:`~gossipml.comm.memory.MemoryTransport` (in-process, for unit tests) both satisfy
:class:`Port`; a peer's rounds, inbound and outbound sides are written against it, never against
sockets.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable


__all__ = ["Port", "Outgoing", "TransportStats", "call_and_wait"]


@dataclass
class Outgoing:
    """One message for some neighbours. ``make_frames`` runs on the communication thread (so the
    encoding overlaps training); ``on_done`` runs there once libzmq no longer reads the frames."""

    dests: tuple[int, ...]
    make_frames: Callable[[], Sequence[object]]
    on_done: Callable[[], None] | None = None


@dataclass
class TransportStats:
    """Counters the communication thread keeps; read them from any thread (plain ints)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    send_dropped: int = 0  # neighbour not connected or its queue full: the message was dropped
    emulated_drops: int = 0
    send_failed: int = 0  # building the frames raised (e.g. a codec error): message lost
    oversized: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_sent_s: dict[int, float] = field(default_factory=dict)  # per dest: time.monotonic()


@runtime_checkable
class Port(Protocol):
    """What a peer needs from its transport: queue messages, run code on the communication
    thread, manage neighbours, read counters."""

    stats: TransportStats

    @property
    def address(self) -> str:
        """The endpoint this peer is reached at."""
        ...

    @property
    def alive(self) -> bool:
        """True while the communication thread (or its in-memory stand-in) runs."""
        ...

    @property
    def error(self) -> BaseException | None:
        """What ended the communication thread, if an exception did."""
        ...

    @property
    def shm_dests(self) -> frozenset[int]:
        """Neighbours reached through shared memory."""
        ...

    @property
    def shm_offloaded(self) -> int:
        """Messages sent through shared memory so far."""
        ...

    def start(self) -> Any:
        """Begin delivering (bind, start the thread)."""
        ...

    def close(self) -> None:
        """Flush what is queued and stop."""
        ...

    def submit(self, outgoing: Outgoing) -> None:
        """Queue one message; returns at once."""
        ...

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the communication thread."""
        ...

    def connect(self, peer_id: int, address: str) -> None:
        """Add a neighbour, or move one to a new address."""
        ...

    def disconnect(self, peer_id: int) -> None:
        """Drop a neighbour (no-op if unknown)."""
        ...

    def shm_probe(self, dest: int) -> str | None:
        """The same-host probe to send ``dest`` (communication thread), or None."""
        ...

    def shm_confirm(self, dest: int, answer: object) -> bool:
        """Check ``dest``'s probe answer; True when shared memory to it is now on."""
        ...

    def shm_release(self, dest: int, token: object) -> bool:
        """Free a shared-memory segment ``dest`` has copied out (communication thread)."""
        ...


def call_and_wait(port: Port, fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` run on ``port``'s communication thread (or here when it is not running); its
    result, or TimeoutError when the thread has not run it within ``timeout_s``."""
    if not port.alive:
        return fn()
    box: list[Any] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append(fn())
        except Exception as exc:  # raised again on the caller's thread, not on the comm thread
            errors.append(exc)
        finally:
            done.set()

    port.call(run)
    if not done.wait(timeout_s):
        raise TimeoutError(f"communication thread busy for {timeout_s} s: nothing read; retry "
                           "later or raise timeout_s")
    if errors:
        raise errors[0]
    return box[0]
