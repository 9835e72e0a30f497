"""Test helpers: free loopback addresses and running peers on threads with a bound on time."""

from __future__ import annotations

import threading
from typing import Any, Callable

from gossipml.comm.addresses import free_ports


def loopback_peers(n: int) -> dict[int, str]:
    """``n`` tcp loopback addresses on ports free right now."""
    return {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(free_ports(n))}


def run_threads(fns: list[Callable[[], Any]], timeout_s: float) -> list[Any]:
    """Run each function on its own thread; return their results; fail if one overruns or raises."""
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def wrap(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    if any(t.is_alive() for t in threads):
        raise AssertionError(f"a peer thread did not finish within {timeout_s} s")
    if errors:
        raise errors[0]
    return results
