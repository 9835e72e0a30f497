"""Pull answers: rate-limited per requester, encoded once and shared by every requester.

A pull request is a few dozen bytes and its answer a whole model, so answering every pull is an
amplifier: 200 pulls of 44 bytes used to clone the model 200 times and send 200 copies. Two
bounds, both on the communication thread:

- :class:`PullLimiter`, a token bucket per requester: ``burst`` answers at once, then one more per
  ``refill_steps`` of this peer's own local steps (an honest neighbour pulling every
  ``pull_every_steps`` of its steps, up to twice as fast as we step, is never refused) and one per
  ``refill_s`` seconds (a peer stalled in a wait or done with its loop still answers, slowly).
  A pull beyond it is refused as ``pull_rate``.
- :class:`PullAnswers`, the answer's frames cached by model version (this peer's local step count
  when the copy was made): every requester of one version gets the same frames, a new copy is made
  only once the model has moved on, and never while ``max_versions`` copies are still being sent
  (the newest is shared instead). Memory: at most ``max_versions`` model copies, whatever arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from gossipml.policies.pacing import PacingConfig

__all__ = ["PullLimit", "PullLimiter", "PullAnswers", "AnswerVersion", "PULL_RATE"]

PULL_RATE = "pull_rate"  # the rejection reason of a pull over its requester's budget


@dataclass(frozen=True)
class PullLimit:
    """Per-requester answer budget (module docstring); the defaults suit one pull per step."""

    burst: int = 4
    refill_steps: float = 0.5
    refill_s: float = 1.0

    def __post_init__(self) -> None:
        if self.burst < 1 or self.refill_steps <= 0 or self.refill_s <= 0:
            raise ValueError(f"pull limit needs burst >= 1, refill_steps > 0 and refill_s > 0, "
                             f"got {self}")

    @classmethod
    def from_pacing(cls, pacing: PacingConfig) -> "PullLimit":
        """One answer per half a pull interval of our steps (a requester may step twice as fast
        as we do; without pulls configured, per half a round), one per heartbeat interval."""
        every = pacing.pull_every_steps or pacing.interval_steps
        return cls(refill_steps=max(every, 1) / 2, refill_s=pacing.heartbeat_interval_s)


class PullLimiter:
    """A token bucket per requester; ``allow`` spends one token when one is there."""

    def __init__(self, limit: PullLimit) -> None:
        self.limit = limit
        self._buckets: dict[int, tuple[float, int, float]] = {}  # tokens, at steps, at time

    def allow(self, requester: int, steps: int, now_s: float) -> bool:
        """True (and one token spent) when ``requester`` may be answered at local step
        ``steps``, time ``now_s``; False when its budget is spent."""
        lim = self.limit
        tokens, at_steps, at_s = self._buckets.get(requester, (float(lim.burst), steps, now_s))
        tokens += max(0, steps - at_steps) / lim.refill_steps
        tokens = min(float(lim.burst), tokens + max(0.0, now_s - at_s) / lim.refill_s)
        ok = tokens >= 1.0
        self._buckets[requester] = (tokens - 1.0 if ok else tokens, steps, now_s)
        return ok

    def forget(self, requester: int) -> None:
        """Drop a requester's bucket (it left the neighbourhood)."""
        self._buckets.pop(requester, None)


class AnswerVersion:
    """One encoded answer: its frames, the model version it holds, and the sends using it."""

    def __init__(self, version: int, frames: Sequence[Any]) -> None:
        self.version = version
        self.frames = list(frames)
        self.users = 0


class PullAnswers:
    """Answers by model version (module docstring); ``acquire`` and ``release`` pair up around
    each send. Owner: the outbound side; communication thread only."""

    def __init__(self, max_versions: int = 2) -> None:
        if max_versions < 1:
            raise ValueError(f"max_versions must be >= 1, got {max_versions}")
        self.max_versions = max_versions
        self._versions: list[AnswerVersion] = []  # oldest first; the last is the newest
        self.encoded = 0  # model copies made so far

    @property
    def alive(self) -> int:
        """Encoded answers held now (each one model copy)."""
        return len(self._versions)

    def acquire(self, version: int, encode: Callable[[], Sequence[Any]]) -> AnswerVersion:
        """The answer for model ``version``: the newest held one when it is that version or
        ``max_versions`` are held, else a new one from ``encode()``."""
        newest = self._versions[-1] if self._versions else None
        if newest is None or (newest.version != version
                              and len(self._versions) < self.max_versions):
            newest = AnswerVersion(version, encode())
            self.encoded += 1
            self._versions.append(newest)
            self._drop_unused()
        newest.users += 1
        return newest

    def release(self, answer: AnswerVersion) -> None:
        """One send of ``answer`` is done (libzmq no longer reads its frames)."""
        answer.users -= 1
        self._drop_unused()

    def _drop_unused(self) -> None:
        newest = self._versions[-1] if self._versions else None
        self._versions = [v for v in self._versions if v is newest or v.users > 0]
