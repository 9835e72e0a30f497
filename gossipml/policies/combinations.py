"""Pace and schedule settings that cannot work together, refused with what to use instead.

Pure: :class:`~gossipml.policies.pacing.PacingConfig` calls :func:`schedule_problem` when it is
built, so a bad combination fails at load time, not as rounds that time out.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["PaceSettings", "schedule_problem"]


class PaceSettings(Protocol):
    """The fields of a ``[pacing]`` table this check reads."""

    mode: str
    interval_steps: int
    push_every_steps: int | None
    pull_every_steps: int | None
    final_sync: bool
    backup_k: int | None
    backup_catch_up: bool


#: Modes whose round-r wait counts a neighbour's model labelled r as its finished round r.
_ROUND_WAIT_MODES = ("sync", "backup")


def schedule_problem(cfg: PaceSettings) -> str | None:
    """What cannot work in this pace and schedule, with what to use instead; None if it can.

    Sync and backup rounds wait for each neighbour's round-r model, and every model a peer sends
    is labelled with its current round: a pull reply, or a push between two round ends, carries a
    round not finished yet and would stand in for that neighbour's round-r model; a round end with
    no push (``push_every_steps`` above ``interval_steps`` or not dividing it) leaves the
    neighbours waiting out ``timeout_s``. So these rounds push once, at each round's end. ``final_sync`` makes the last round a sync round: the same holds there.
    Backup options without ``mode = "backup"`` would do nothing.
    """
    push = cfg.interval_steps if cfg.push_every_steps is None else cfg.push_every_steps
    waits = cfg.mode in _ROUND_WAIT_MODES
    if waits:
        where, instead = f"mode = {cfg.mode!r}", 'use mode = "async" or "ssp"'
    else:
        where, instead = "final_sync = true (a sync last round)", "drop final_sync"
    if (waits or cfg.final_sync) and cfg.pull_every_steps is not None:
        return (f"pull_every_steps with {where}: a pull reply carries the replier's unfinished "
                "round and would count as its finished round-r model in the round wait (the "
                f"round waits for every neighbour's push anyway). Leave pull_every_steps out, or "
                f"{instead} for push-pull gossip")
    if (waits or cfg.final_sync) and push > cfg.interval_steps:
        return (f"push_every_steps ({push}) > interval_steps ({cfg.interval_steps}) with {where}:"
                " rounds that end without a push make every neighbour wait out timeout_s. Leave "
                f"push_every_steps out (one push at each round's end), or {instead}")
    if (waits or cfg.final_sync) and push != cfg.interval_steps:
        return (f"push_every_steps ({push}) < interval_steps ({cfg.interval_steps}) with {where}:"
                " a push between two round ends carries an unfinished round and would count as "
                "the finished round-r model (and a round end can go without a push). Leave "
                f"push_every_steps out (one push at each round's end), or {instead}")
    if cfg.mode != "backup" and (cfg.backup_catch_up or cfg.backup_k is not None):
        return (f"backup_k and backup_catch_up apply to mode = \"backup\" only; with mode = "
                f"{cfg.mode!r} they would do nothing: remove them or set mode = \"backup\"")
    return None
