"""The two ends of ``scripts/bench_wire.py``'s gossipml path, importable by spawned processes.

Both ends run a real :class:`~gossipml.comm.transport.Transport`. The sender packs an identity-coded
model with :mod:`gossipml.wire`; the receiver resolves the same-host form when it is used
(:mod:`gossipml.comm.shmpath`: read in place, the segment released when the model is dropped), runs ``unpack`` with every check and
``decode_model``, touches the decoded tensor, and acknowledges, exactly as a peer does.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

from gossipml.codecs import build_codec, decode_model, encode_model
from gossipml.comm.config import TransportConfig
from gossipml.comm.shmpath import ShmInbox
from gossipml.comm.transport import Outgoing, Transport
from gossipml.wire import Message, pack, unpack

__all__ = ["sender_loop", "receiver_loop"]

_TIMEOUT_S = 120.0


def _cfg(shm: bool) -> TransportConfig:
    return TransportConfig(max_message_bytes=2**31 - 1, shm=shm)


def receiver_loop(port: int, sender_port: int, iters: int, shm: bool, ready_q: Any) -> None:
    """Receive ``iters + 1`` models, decode each, acknowledge each to peer 0."""
    torch.set_num_threads(1)
    got = threading.Semaphore(0)
    inbox = ShmInbox()
    done = pack(Message(kind="ack", sender=1, round=0, info={"done": True}))

    def release(token: dict) -> None:  # the decoded model is gone: the segment is free again
        ack = pack(Message(kind="ack", sender=1, round=0, info={"shm_release": token}))
        transport.submit(Outgoing((0,), lambda: ack))

    def on_frames(sender: int | None, frames: list) -> None:
        bufs = inbox.resolve([f.buffer for f in frames], release)
        msg = unpack(bufs, max_message_bytes=2**31 - 1)
        model = decode_model(msg.tensors, "cpu")
        _ = sum(float(v.view(-1)[-1]) for v in model.values())  # touch the data
        transport.submit(Outgoing((0,), lambda: done))  # sent in this same loop iteration
        got.release()

    transport = Transport(1, f"tcp://127.0.0.1:{port}", {0: f"tcp://127.0.0.1:{sender_port}"},
                          _cfg(shm), on_frames, shm_dests=frozenset({0}) if shm else frozenset())
    transport.start()
    ready_q.put("ready")
    for _ in range(iters + 1):
        if not got.acquire(timeout=_TIMEOUT_S):
            raise TimeoutError("bench receiver: no model within the timeout")
    time.sleep(0.5)
    transport.close()
    inbox.close()


def sender_loop(port: int, sender_port: int, nbytes: int, iters: int, shm: bool) -> float:
    """Send ``iters`` models (after one warm-up), each acknowledged; return GB/s."""
    torch.set_num_threads(1)
    model = {"w": torch.ones(nbytes // 4)}
    codec = build_codec("identity")
    acked = threading.Semaphore(0)

    def on_frames(sender: int | None, frames: list) -> None:
        msg = unpack([f.buffer for f in frames])
        if "shm_release" in msg.info:
            transport.shm_release(1, msg.info["shm_release"])
        if msg.info.get("done"):
            acked.release()

    transport = Transport(0, f"tcp://127.0.0.1:{sender_port}", {1: f"tcp://127.0.0.1:{port}"},
                          _cfg(shm), on_frames, shm_dests=frozenset({1}) if shm else frozenset())
    transport.start()

    def frames() -> list:
        items, _ = encode_model(model, codec, None)
        return pack(Message(kind="model", sender=0, round=0, tensors=tuple(items)))

    def one() -> None:
        deadline = time.monotonic() + _TIMEOUT_S
        while True:  # IMMEDIATE drops sends until connected: resend until acknowledged
            transport.submit(Outgoing((1,), frames))
            if acked.acquire(timeout=2.0):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("bench sender: no acknowledgement within the timeout")

    one()
    t0 = time.perf_counter()
    for _ in range(iters):
        one()
    gbps = nbytes * iters / (time.perf_counter() - t0) / 1e9
    offloaded = transport.shm_offloaded
    transport.close()
    if shm and offloaded < iters:
        raise RuntimeError(f"only {offloaded} of {iters + 1} sends went through shared memory")
    return gbps
