"""``[peer]`` keys that act on messages and waits, on peers over an in-memory network: what
peer 0 sends (bytes, values its neighbour receives) and how long it waits, for two values."""

from __future__ import annotations

import time
from typing import Any

import torch

DELTA = {"codec": {"spec": "topk:0.5", "content": "delta"}, "pacing": {"mode": "async"}}


def _bytes_sent(memory_peers, peer: dict[str, Any], steps: int = 4,
                base: dict[str, Any] = DELTA) -> int:
    p0, _ = memory_peers([0.0, 1.0], {**base, "peer": peer})
    for i in range(steps):
        with torch.no_grad():  # the model moves a little each round, as in training
            for p in p0.model.parameters():
                p.add_(0.1 * (i + 1))
        p0.step()
    return p0.stats()["bytes_sent"]


def _received_by_1(memory_peers, peer: dict[str, Any]) -> torch.Tensor:
    p0, p1 = memory_peers([0.5, 0.0], {"pacing": {"mode": "async"}, "peer": peer})
    p0.step()
    held = p1.mailbox.snapshot()[0][0]
    return torch.cat([t.flatten() for t in held.params.values()])


def test_keyframe_every_rounds_resends_the_reference(memory_peers):
    assert _bytes_sent(memory_peers, {"keyframe_every_rounds": 1}) != \
        _bytes_sent(memory_peers, {"keyframe_every_rounds": 10})


def test_keyframe_codec_is_how_keyframes_travel(memory_peers):
    assert _bytes_sent(memory_peers, {"keyframe_codec": "identity"}, steps=1) != \
        _bytes_sent(memory_peers, {"keyframe_codec": "fp16"}, steps=1)


def test_refresh_every_rounds_sends_dense_deltas(memory_peers):
    assert _bytes_sent(memory_peers, {"refresh_every_rounds": 0}) != \
        _bytes_sent(memory_peers, {"refresh_every_rounds": 1})


def test_refresh_codec_is_how_refreshes_travel(memory_peers):
    assert _bytes_sent(memory_peers, {"refresh_every_rounds": 1, "refresh_codec": "q8"}) != \
        _bytes_sent(memory_peers, {"refresh_every_rounds": 1, "refresh_codec": "sign"})


def test_attack_is_what_an_attacker_sends(memory_peers):
    honest = _received_by_1(memory_peers, {})
    scaled = _received_by_1(memory_peers, {"attack": "scale:100", "attackers": [0]})
    noisy = _received_by_1(memory_peers, {"attack": "noise:1", "attackers": [0]})
    assert torch.allclose(scaled, honest * 100)
    assert not torch.allclose(noisy, scaled) and not torch.allclose(noisy, honest)


def test_attackers_are_the_peers_that_attack(memory_peers):
    honest = _received_by_1(memory_peers, {"attack": "scale:100", "attackers": [1]})
    attacked = _received_by_1(memory_peers, {"attack": "scale:100", "attackers": [0]})
    assert torch.all(honest == 0.5) and not torch.allclose(attacked, honest)


def test_startup_timeout_s_bounds_the_wait_for_neighbours(memory_peers):
    waited = {}
    for timeout_s in (0.1, 1.0):
        p0, _ = memory_peers([0.0, 1.0], {"peer": {"startup_timeout_s": timeout_s}})
        t0 = time.monotonic()
        missing = p0.wait_for_neighbors()
        waited[timeout_s] = time.monotonic() - t0
        assert missing == {1}  # nobody ticked the network: peer 1 was never heard
    assert waited[0.1] < 0.6 <= waited[1.0]
