"""The two ends of ``scripts/bench_wire.py``'s gossipml path, importable by spawned processes.

The sender runs a real :class:`~gossipml.transport.Transport` and sends an identity-coded model
packed by :mod:`gossipml.wire`; the receiver's transport hands the frames to ``unpack`` (every
check on) and ``decode_model``, touches the decoded tensor, and acknowledges. With ``shm`` on, both
ends use the same-host path of :mod:`gossipml.shmpath`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

from gossipml.codecs import build_codec, decode_model, encode_model
from gossipml.settings import TransportConfig
from gossipml.transport import Outgoing, Transport
from gossipml.wire import Message, pack, unpack

__all__ = ["sender_loop", "receiver_loop"]

_TIMEOUT_S = 120.0


def _cfg() -> TransportConfig:
    return TransportConfig(max_message_bytes=2**31 - 1)


def receiver_loop(port: int, sender_port: int, iters: int, shm: bool, ready_q: Any) -> None:
    """Receive ``iters + 1`` models, decode each, acknowledge each to peer 0."""
    torch.set_num_threads(1)
    got = threading.Semaphore(0)
    reader = None
    if shm:
        from gossipml.shmpath import ShmReceiver

        reader = ShmReceiver()

    def on_frames(sender: int | None, frames: list) -> None:
        bufs = [f.buffer for f in frames]
        if reader is not None:
            bufs = reader.resolve(bufs)
        msg = unpack(bufs, max_message_bytes=2**31 - 1)
        model = decode_model(msg.tensors, "cpu")
        if reader is not None:
            model = {k: v.clone() for k, v in model.items()}  # copy out, then release the segment
            reader.release_after_use(msg, transport)
        _ = sum(float(v.view(-1)[-1]) for v in model.values())  # touch the data
        got.release()

    transport = Transport(1, f"tcp://127.0.0.1:{port}", {0: f"tcp://127.0.0.1:{sender_port}"},
                          _cfg(), on_frames)
    transport.start()
    ready_q.put("ready")
    ack = pack(Message(kind="ack", sender=1, round=0))
    for i in range(iters + 1):
        if not got.acquire(timeout=_TIMEOUT_S):
            raise TimeoutError("bench receiver: no model within the timeout")
        transport.submit(Outgoing((0,), lambda: ack))
    time.sleep(0.2)
    transport.close()


def sender_loop(port: int, sender_port: int, nbytes: int, iters: int, shm: bool) -> float:
    """Send ``iters`` models (after one warm-up), each acknowledged; return GB/s."""
    torch.set_num_threads(1)
    model = {"w": torch.ones(nbytes // 4)}
    codec = build_codec("identity")
    acked = threading.Semaphore(0)
    transport = Transport(0, f"tcp://127.0.0.1:{sender_port}", {1: f"tcp://127.0.0.1:{port}"}, _cfg(),
                          lambda s, f: acked.release())
    writer = None
    if shm:
        from gossipml.shmpath import ShmSender

        writer = ShmSender()
    transport.start()

    def frames() -> list:
        items, _ = encode_model(model, codec, None)
        out = pack(Message(kind="model", sender=0, round=0, tensors=tuple(items)))
        return writer.offload(out) if writer is not None else out

    def one() -> None:
        deadline = time.monotonic() + _TIMEOUT_S
        while True:  # IMMEDIATE drops sends until connected: resend until acknowledged
            transport.submit(Outgoing((1,), frames))
            if acked.acquire(timeout=1.0):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("bench sender: no acknowledgement within the timeout")

    one()
    t0 = time.perf_counter()
    for _ in range(iters):
        one()
    gbps = nbytes * iters / (time.perf_counter() - t0) / 1e9
    transport.close()
    if writer is not None:
        writer.close()
    return gbps
