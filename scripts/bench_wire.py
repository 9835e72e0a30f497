#!/usr/bin/env python
"""Throughput of one model moving between two processes on this host, against baselines.

All in one invocation, between two spawned processes, with the same tensor size (default a
64 MiB float32 model):

- ``zmq_gbps``: raw pyzmq, zero-copy multipart DEALER -> ROUTER over tcp loopback;
- ``gloo_gbps``: torch.distributed gloo ``send``/``recv`` over tcp loopback;
- ``gossipml_gbps``: gossipml's own path over tcp: ``wire.pack`` of an identity-coded model, the
  transport's communication thread, ``wire.unpack`` with every check, and ``decode_model``;
- ``gossipml_shm_gbps``: the same path with the same-host fast path on: tensor bytes through shared
  memory, only a small handle over the socket (the receiver copies the model out, then releases);
- ``vs_zmq`` = gossipml_gbps / zmq_gbps and ``best_vs_gloo`` = max(gossipml paths) / gloo_gbps.

Each transfer is acknowledged by the receiver (a tiny message back), so the figures are end to end.
Usage: ``python scripts/bench_wire.py [--json] [--smoke] [--mib 64] [--iters 8]``. ``--smoke``
(1 MiB, 2 transfers a path) runs every path in seconds: a test that the benchmark works, not a
measurement. Measured figures: ``docs/results/bench_wire.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import sys
import time

GB = 1e9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- raw pyzmq ---------------------------------------------------------------------------------
def _zmq_receiver(port: int, iters: int, q) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(f"tcp://127.0.0.1:{port}")
    q.put("ready")
    for _ in range(iters + 1):  # one warm-up
        frames = sock.recv_multipart(copy=False)
        sock.send_multipart([frames[0], b"ack"])
    sock.close(linger=1000)
    ctx.term()


def bench_zmq(nbytes: int, iters: int) -> float:
    import numpy as np
    import zmq

    port, q = _free_port(), mp.Queue()
    proc = mp.Process(target=_zmq_receiver, args=(port, iters, q))
    proc.start()
    q.get(timeout=60)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 60_000)
    sock.connect(f"tcp://127.0.0.1:{port}")
    payload = np.ones(nbytes // 4, dtype=np.float32)
    sock.send_multipart([b"h", payload], copy=False)
    sock.recv()
    t0 = time.perf_counter()
    for _ in range(iters):
        sock.send_multipart([b"h", payload], copy=False)
        sock.recv()
    dt = time.perf_counter() - t0
    sock.close(linger=0)
    ctx.term()
    proc.join(30)
    return nbytes * iters / dt / GB


# ---- gloo ----------------------------------------------------------------------------------------
def _gloo_main(rank: int, port: int, nbytes: int, iters: int, q) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    buf = torch.ones(nbytes // 4) if rank == 0 else torch.empty(nbytes // 4)
    ack = torch.zeros(1)
    dist.barrier()
    for i in range(iters + 1):
        if i == 1:
            t0 = time.perf_counter()
        if rank == 0:
            dist.send(buf, 1)
            dist.recv(ack, 1)
        else:
            dist.recv(buf, 0)
            dist.send(ack, 0)
    if rank == 0:
        q.put(nbytes * iters / (time.perf_counter() - t0) / GB)
    dist.destroy_process_group()


def bench_gloo(nbytes: int, iters: int) -> float:
    port, q = _free_port(), mp.Queue()
    procs = [mp.Process(target=_gloo_main, args=(r, port, nbytes, iters, q)) for r in (0, 1)]
    for p in procs:
        p.start()
    gbps = q.get(timeout=300)
    for p in procs:
        p.join(60)
    return gbps


# ---- gossipml ----------------------------------------------------------------------------------
def _gml_receiver(port: int, sender_port: int, iters: int, shm: bool, q) -> None:
    from benchpath import receiver_loop

    receiver_loop(port, sender_port, iters, shm, q)


def bench_gossipml(nbytes: int, iters: int, shm: bool) -> float:
    from benchpath import sender_loop

    port, sender_port, q = _free_port(), _free_port(), mp.Queue()
    proc = mp.Process(target=_gml_receiver, args=(port, sender_port, iters, shm, q))
    proc.start()
    q.get(timeout=60)
    gbps = sender_loop(port, sender_port, nbytes, iters, shm)
    proc.join(60)
    return gbps


def memcpy_gbps(nbytes: int) -> float:
    """Single-thread memcpy of the same size (the ceiling for any copy on this host)."""
    import numpy as np

    src, dst = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)
    np.copyto(dst, src)
    t0 = time.perf_counter()
    for _ in range(5):
        np.copyto(dst, src)
    return nbytes * 5 / (time.perf_counter() - t0) / GB


def main(argv: list[str] | None = None) -> int:
    """Measure every path once and print the figures (one JSON object with --json)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--smoke", action="store_true",
                    help="every path, 1 MiB, 2 transfers (checks the benchmark runs)")
    ap.add_argument("--mib", type=int, default=None,
                    help="model size in MiB (float32; default 64, 1 with --smoke)")
    ap.add_argument("--iters", type=int, default=None,
                    help="timed transfers per path (default 8, 2 with --smoke)")
    args = ap.parse_args(argv)
    args.mib = args.mib or (1 if args.smoke else 64)
    args.iters = args.iters or (2 if args.smoke else 8)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.set_start_method("spawn", force=True)
    nbytes = args.mib * 2**20
    res = {"mib": args.mib, "iters": args.iters}
    res["memcpy_gbps"] = memcpy_gbps(nbytes)
    res["zmq_gbps"] = bench_zmq(nbytes, args.iters)
    res["gloo_gbps"] = bench_gloo(nbytes, args.iters)
    res["gossipml_gbps"] = bench_gossipml(nbytes, args.iters, shm=False)
    res["gossipml_shm_gbps"] = bench_gossipml(nbytes, args.iters, shm=True)
    res["vs_zmq"] = res["gossipml_gbps"] / res["zmq_gbps"]
    res["best_vs_gloo"] = max(res["gossipml_gbps"], res["gossipml_shm_gbps"]) / res["gloo_gbps"]
    res = {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
