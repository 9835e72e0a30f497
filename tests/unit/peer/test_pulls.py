"""Pull answers: a per-requester token bucket and one shared encoding per model version."""

from __future__ import annotations

import pytest

from gossipml.peer.pulls import PullAnswers, PullLimit, PullLimiter
from gossipml.policies.pacing import PacingConfig


def test_a_burst_then_one_answer_per_refill():
    limiter = PullLimiter(PullLimit(burst=4, refill_steps=2, refill_s=10.0))
    # 200 pulls at one instant and step: only the burst
    assert sum(limiter.allow(1, 0, 0.0) for _ in range(200)) == 4
    # each requester has its own bucket
    assert limiter.allow(2, 0, 0.0)
    # two of our steps or ten seconds give one more answer each
    assert limiter.allow(1, 2, 0.0) and not limiter.allow(1, 3, 0.0)
    assert limiter.allow(1, 3, 10.0) and not limiter.allow(1, 3, 10.0)
    # refills are capped at the burst
    assert sum(limiter.allow(1, 10_000, 1e6) for _ in range(10)) == 4


def test_the_limit_follows_the_pull_interval():
    limit = PullLimit.from_pacing(PacingConfig(interval_steps=4, pull_every_steps=3,
                                               heartbeat_interval_s=0.5))
    assert (limit.refill_steps, limit.refill_s) == (1.5, 0.5)
    assert PullLimit.from_pacing(PacingConfig(interval_steps=4)).refill_steps == 2
    with pytest.raises(ValueError):
        PullLimit(burst=0)


def test_requesters_of_one_version_share_one_encoding():
    answers, made = PullAnswers(max_versions=2), []

    def encode(tag: str):
        return lambda: made.append(tag) or [tag.encode()]

    a = [answers.acquire(5, encode("v5")) for _ in range(3)]
    assert made == ["v5"] and all(x is a[0] for x in a) and a[0].frames == [b"v5"]
    b = answers.acquire(6, encode("v6"))  # the model moved on: a new copy
    assert made == ["v5", "v6"] and answers.alive == 2
    c = answers.acquire(7, encode("v7"))  # two copies still being sent: share the newest
    assert c is b and made == ["v5", "v6"]
    for x in a:
        answers.release(x)
    assert answers.alive == 1  # v5's sends are done: only the newest stays
    d = answers.acquire(7, encode("v7"))
    assert made == ["v5", "v6", "v7"] and d.version == 7 and answers.encoded == 3
