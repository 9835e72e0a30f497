"""The transport's shared-memory side: fallbacks counted, unreleased segments expired, a
destination that never releases served over the socket again, and the probe handshake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gossipml.comm.shm import SHM_TAG, offloaded_handle
from gossipml.comm.shmpath import (ShmInbox, ShmOutbox, answer_probe, make_probe,
                                   probe_confirmed, remove_probe)

SHM_DIR = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="needs POSIX shared memory at /dev/shm")


def _gml_entries() -> set[str]:
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith("gml-")}


@pytest.fixture
def no_leaks():
    """Fails the test if it leaves a gossipml segment or probe in /dev/shm."""
    before = _gml_entries()
    yield
    assert _gml_entries() <= before, _gml_entries() - before


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


FRAMES = [b"header", np.arange(4096, dtype=np.uint8), b"tail"]


def test_outbox_serves_only_enabled_dests_and_round_trips(no_leaks):
    out, inbox = ShmOutbox(min_bytes=1000, dests=[1]), ShmInbox()
    try:
        assert out.offload(2, FRAMES) == FRAMES  # not enabled
        assert out.offload(1, FRAMES[:1] + [b"x"]) == FRAMES[:1] + [b"x"]  # too small
        sent = out.offload(1, FRAMES)
        assert sent[0] == SHM_TAG and out.offloaded == 1
        tokens: list = []
        got = inbox.resolve([bytes(memoryview(f)) for f in sent], tokens.append)
        assert got[0] == b"header" and bytes(got[1]) == FRAMES[1].tobytes()
        assert bytes(got[2]) == b"tail"
        assert tokens == [{"name": offloaded_handle(sent)["name"], "gen": 1}]  # released at once
        assert out.release(1, tokens[0]) and not out.release(1, tokens[0])
        out.disable(1)
        assert out.offload(1, FRAMES) == FRAMES and 1 not in out.dests
    finally:
        out.close()


def test_dest_that_never_releases_goes_back_to_the_socket(no_leaks):
    clock = _Clock()
    out = ShmOutbox(min_bytes=0, max_segments=2, dests=[1, 2], release_timeout_s=10.0,
                    clock=clock)
    try:
        assert out.offload(1, FRAMES)[0] == SHM_TAG and out.offload(1, FRAMES)[0] == SHM_TAG
        assert out.offload(1, FRAMES) == FRAMES and out.counts["fallback_pool_full"] == 1
        first = out.offload(2, FRAMES)
        assert out.release(2, {"name": offloaded_handle(first)["name"], "gen": 1})
        out.offload(2, FRAMES)  # held, never released
        clock.now = 11.0
        assert out.offload(1, FRAMES) == FRAMES  # both expired, never a release: socket again
        assert 1 not in out.dests and out.counts["expired"] == 2 and out.counts["disabled"] == 1
        assert out.offload(2, FRAMES)[0] == SHM_TAG  # it did release once: kept, segment expired
        assert out.dests == {2} and out.counts["expired"] == 3
        assert len([n for n in _gml_entries() if n.startswith(f"gml-{os.getpid()}-")]) <= 2
    finally:
        out.close()


def test_probe_handshake_enables_a_dest(no_leaks, tmp_path):
    out = ShmOutbox(min_bytes=0)
    try:
        name = out.probe(3)
        assert out.probe(3) == name and (SHM_DIR / name).stat().st_mode & 0o777 == 0o600
        assert not out.confirm(3, b"\0" * 16) and 3 not in out.dests  # a wrong answer
        assert not out.confirm(4, answer_probe(name))  # no probe outstanding for 4
        assert answer_probe(name, str(tmp_path)) is None  # another directory cannot see it
        assert out.confirm(3, answer_probe(name)) and 3 in out.dests
        assert not (SHM_DIR / name).exists()
    finally:
        out.close()


def test_probe_answered_by_another_process_and_refused_garbage(no_leaks):
    name, nonce = make_probe()
    try:
        code = ("import sys; from gossipml.comm.shmpath import answer_probe; "
                "sys.stdout.write(answer_probe(sys.argv[1]).hex())")
        answer = subprocess.run([sys.executable, "-c", code, name], capture_output=True,
                                text=True, timeout=60, check=True).stdout
        assert probe_confirmed(nonce, bytes.fromhex(answer))
        for bad in [None, 3, "../etc/passwd", "gml-probe-zz", name + "0"]:
            assert answer_probe(bad) is None
        assert not probe_confirmed(nonce, nonce.hex()) and not probe_confirmed(nonce, None)
    finally:
        remove_probe(name)
    remove_probe(name)  # gone already: fine
    with pytest.raises(ValueError):
        remove_probe("passwd")


