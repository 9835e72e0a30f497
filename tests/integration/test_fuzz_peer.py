"""A stateful fuzz of a live peer over a real socket: random sequences of messages with
well-formed-looking headers (every kind, random ``info``, hostile rounds, senders, sequence
numbers and codec metas) go to peer 0 from a raw DEALER while peer 0 and its honest neighbour,
peer 1, train. Nothing may end a thread or escape ``step()``, memory stays bounded, and once the
fuzz stops peer 0 merges peer 1's own model of each round again (no forged value silences it,
or stands in for it, for good)."""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipml.config import ExperimentConfig
from gossipml.peer import Peer, exchanged_state
from gossipml.tasks import build_task
from gossipml.wire import KINDS, WIRE_VERSION

RSS_GROWTH_BOUND_MB = 200  # the whole test process may grow this much over the fuzz, at most
MAX_EXAMPLES = 120  # sequences of 1..6 messages: at most 720 messages (~10-20 s here)
SETTLE_ROUNDS = 2  # rounds after the fuzz in which a forged in-window value may still count
CHECK_ROUNDS = 5  # rounds after those that must each merge the honest neighbour

HOSTILE_INTS = st.sampled_from([-1, 2**31 - 1, 2**62 - 1, 2**63 - 1, 2**64 - 1, -(2**63), 10**9])
INTS = st.one_of(st.integers(0, 40), HOSTILE_INTS)  # mostly plausible, often not
SCALARS = st.one_of(INTS, st.booleans(), st.none(), st.floats(allow_nan=True),
                    st.text(max_size=12), st.binary(max_size=12))
VALUES = st.one_of(SCALARS, st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12))
INFO_KEYS = st.sampled_from(["seq", "keyframe", "refresh", "done", "hears", "num_samples",
                             "pulled", "shm_release", "address", "view", "reply", "x"])
META_KEYS = st.sampled_from(["block", "k", "rank", "values", "seed", "scale", "bits", "n",
                             "numel", "threshold", "y"])
CODECS = st.sampled_from(["identity", "fp16", "bf16", "q8", "q4", "q2", "sign", "topk", "randk",
                          "threshold", "lowrank", "nope"])


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """What an identity payload of this dtype and shape takes."""
    return torch.Size(shape).numel() * torch.tensor([], dtype=getattr(torch, dtype)).element_size()


@st.composite
def tensor_entries(draw, specs: dict[str, tuple[str, tuple[int, ...]]],
                   plausible: bool) -> tuple[list, list[bytes]]:
    """Header tensor entries and their buffers: the model's own (plausible: every tensor, right
    dtype and shape, the identity size) or anything near it."""
    tensors, buffers = [], []
    for name, (dtype, shape) in specs.items():
        if not plausible and draw(st.integers(0, 4)) == 0:
            continue  # a tensor left out
        if not plausible and draw(st.integers(0, 5)) == 0:
            shape = tuple(draw(st.lists(st.integers(0, 70), max_size=3)))
        if not plausible:
            dtype = draw(st.sampled_from([dtype] * 5 + ["float16", "int8"]))
        sizes = draw(st.one_of(st.just([_nbytes(dtype, shape)]),
                               st.lists(st.integers(0, 2048), min_size=1, max_size=3)))
        codec = draw(st.one_of(st.just("identity"), CODECS) if plausible else CODECS)
        meta = draw(st.one_of(st.just({}), st.dictionaries(META_KEYS, VALUES, max_size=4)))
        tensors.append([name, dtype, list(shape), codec, meta, sizes])
        buffers += [draw(st.binary(min_size=n, max_size=n)) for n in sizes]
    return tensors, buffers


@st.composite
def messages(draw, specs: dict[str, tuple[str, tuple[int, ...]]]) -> list[bytes]:
    """One message's frames: a v1 header (as the wire layer lays it out) with hostile values;
    half of them plausible (peer 1's id, a kind peers send, the model's tensors), so they reach
    the handlers, the decoder and the mailbox rather than the wire checks only."""
    plausible = draw(st.booleans())
    kinds = ["heartbeat", "model", "delta", "pull"] if plausible else sorted(KINDS) + ["bogus"]
    kind = draw(st.sampled_from(kinds))
    tensors, buffers = ([], []) if kind in ("heartbeat", "pull") or draw(st.integers(0, 3)) == 0 \
        else draw(tensor_entries(specs, plausible))
    info = draw(st.dictionaries(INFO_KEYS, VALUES, max_size=5))
    if plausible:
        info.update(seq=draw(INTS), keyframe=draw(st.booleans()), done=False)
    header = {"v": WIRE_VERSION, "kind": kind,
              "sender": 1 if plausible else draw(st.one_of(st.sampled_from([0, 1, 2]), INTS)),
              "round": draw(INTS), "info": info, "tensors": tensors}
    return [msgpack.packb(header, use_bin_type=True), *buffers]


def test_random_message_sequences_leave_a_live_peer_training_and_merging(loopback_peers,
                                                                          rss_bytes):
    # Prepare: two sync peers training on threads, a raw DEALER aimed at peer 0
    cfg = ExperimentConfig.from_dict({
        "run": {"n_peers": 2, "seed": 11}, "data": {"dataset": "digits"},
        "task": {"model": "logreg", "lr": 0.1},
        "pacing": {"mode": "sync", "timeout_s": 5.0, "interval_steps": 2},
        "transport": {"shm": False}, "peer": {"startup_timeout_s": 20.0}})
    addresses = loopback_peers(2)
    tasks = [build_task(cfg.task, cfg.data, i, 2, cfg.run.seed) for i in range(2)]
    specs = {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape))
             for k, v in exchanged_state(tasks[0].model).items()}
    stop, linked = threading.Event(), threading.Event()
    rounds: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    errors: list[BaseException] = []
    peers: dict[int, Peer] = {}

    def peer_main(i: int) -> None:
        try:
            with Peer(tasks[i].model, cfg, id=i, peers=addresses) as peer:
                peers[i] = peer
                peer.wait_for_neighbors()
                linked.set()
                while not stop.is_set():
                    tasks[i].train_step()
                    out = peer.step()  # no exception may escape
                    if out is not None and not stop.is_set():  # a round ending after the stop
                        rounds[i].append(out)  # may have seen its neighbour leave: rest_dead
                stop.set()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=peer_main, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 2000)
    try:
        assert linked.wait(60), "the peers never linked"
        sock.connect(addresses[0])
        time.sleep(0.2)
        rss_before = rss_bytes()
        sent = [0]

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(messages(specs), min_size=1, max_size=6))
        def fuzz(sequence: list[list[bytes]]) -> None:
            for frames in sequence:
                sock.send_multipart(frames)
                sent[0] += 1
            time.sleep(0.01)
            assert not errors, errors
            assert peers[0].transport.alive, "peer 0's communication thread died"

        # Execute: the fuzz, then the rounds after it
        fuzz()
        time.sleep(0.5)  # let the last messages be handled
        rss_growth = (rss_bytes() - rss_before) / 2**20
        after = len(rounds[0])
        deadline = time.monotonic() + 90
        while (len(rounds[0]) < after + SETTLE_ROUNDS + CHECK_ROUNDS and not errors
               and time.monotonic() < deadline):
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        sock.close()
        ctx.term()
    # Assert: no thread died, nothing escaped step(), memory bounded, peer 1 merged again
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    rejected = peers[0].stats()["rejected_by_reason"]
    assert sum(rejected.values()) >= sent[0] // 2, (sent[0], rejected)  # most were refused
    assert rss_growth < RSS_GROWTH_BOUND_MB, rss_growth
    checked = rounds[0][after + SETTLE_ROUNDS:]
    assert len(checked) >= CHECK_ROUNDS, len(checked)
    # peer 1's own round-r model, not a forged one of another round standing in for it
    assert all(e["merged"] == [1] and e["staleness"] == [0] for e in checked), \
        [{k: e.get(k) for k in ("round", "merged", "staleness", "pace", "missing", "wait_s")}
         for e in checked if e["merged"] != [1] or e["staleness"] != [0]]
