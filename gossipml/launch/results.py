"""A run's results folder: the summary JSON and the accuracy plot, built from the event streams."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Sequence

from gossipml.events import EventTail, events_path, read_events

__all__ = ["summarize", "write_summary", "plot_accuracy", "events_path", "progress_rows",
           "all_started", "failure_reasons"]


def _peer_summary(peer_id: int, events: list[dict[str, Any]]) -> dict[str, Any]:
    final = next((e for e in reversed(events) if e["event"] == "final"), None)
    rounds = [e for e in events if e["event"] == "round"]
    last = final or (rounds[-1] if rounds else {})
    accs = [e["accuracy"] for e in rounds if e.get("accuracy") is not None]
    ensemble = [e["ensemble_accuracy"] for e in rounds if e.get("ensemble_accuracy") is not None]
    return {
        "id": peer_id,
        "finished": final is not None,
        "rounds": len(rounds),
        "final_accuracy": (final or {}).get("accuracy", accs[-1] if accs else None),
        # ensemble rules: the accuracy of the own model with the kept neighbour models
        "final_ensemble_accuracy": (final or {}).get("ensemble_accuracy",
                                                     ensemble[-1] if ensemble else None),
        "final_loss": last.get("loss"),
        "bytes_sent": last.get("bytes_sent", 0),
        "bytes_received": last.get("bytes_received", 0),
        "rejected": last.get("rejected", 0),
        "send_dropped": last.get("send_dropped", 0),
        "send_failed": last.get("send_failed", 0),
        "median_round_s": _median_round_s(rounds),
        "extra": {k: v for k, v in (final or {}).items()
                  if k in ("distance_to_optimum", "train_loss")},
    }


def _median_round_s(rounds: list[dict[str, Any]]) -> float | None:
    times = [e["t_s"] for e in rounds]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return round(statistics.median(gaps), 4) if gaps else None


def summarize(out_dir: str | Path, n_peers: int, *, wall_s: float, failed: Sequence[int],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summary of a run folder: per-peer figures and the means across peers (accuracy of the
    local models; with an ensemble rule also of each peer's ensemble, ``mean_ensemble_accuracy``)."""
    peers = [_peer_summary(i, read_events(events_path(out_dir, i))) for i in range(n_peers)]
    failed_ids = sorted(set(failed) | {p["id"] for p in peers if not p["finished"]})
    accs = [p["final_accuracy"] for p in peers if p["final_accuracy"] is not None]
    ensemble = [p["final_ensemble_accuracy"] for p in peers
                if p["final_ensemble_accuracy"] is not None]
    medians = [p["median_round_s"] for p in peers if p["median_round_s"] is not None]
    summary = {
        "mean_accuracy": round(statistics.fmean(accs), 5) if accs else None,
        "min_accuracy": min(accs) if accs else None,
        "max_accuracy": max(accs) if accs else None,
        "mean_ensemble_accuracy": round(statistics.fmean(ensemble), 5) if ensemble else None,
        "wall_s": round(wall_s, 3),
        "failed_peers": failed_ids,
        "n_peers": n_peers,
        "bytes_sent": sum(p["bytes_sent"] for p in peers),
        "rejected": sum(p["rejected"] for p in peers),
        "median_round_s": round(statistics.median(medians), 4) if medians else None,
        "peers": peers,
    }
    for key in ("distance_to_optimum", "train_loss"):  # means over peers, when peers report them
        vals = [p["extra"][key] for p in peers if p["extra"].get(key) is not None]
        if vals:
            summary[key] = round(statistics.fmean(vals), 6)
    summary.update(extra or {})
    return summary


def write_summary(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` into the run folder."""
    path = Path(out_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path


def plot_accuracy(out_dir: str | Path, n_peers: int, title: str = "") -> Path | None:
    """PNG of test accuracy against round, one line per peer; None if nothing was evaluated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for i in range(n_peers):
        pts = [(e["round"], e["accuracy"]) for e in read_events(events_path(out_dir, i))
               if e["event"] == "round" and e.get("accuracy") is not None]
        if pts:
            ax.plot(*zip(*pts), marker=".", linewidth=1, label=f"peer {i}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "accuracy per peer")
    ax.grid(alpha=0.3)
    if n_peers <= 16:
        ax.legend(fontsize=7, ncol=2)
    path = Path(out_dir) / "accuracy.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def progress_rows(tails: list[EventTail]) -> list[dict[str, Any]]:
    """The newest round event of each peer (for live progress), reading only new lines."""
    rows = []
    for i, tail in enumerate(tails):
        tail.poll()
        rows.append(tail.latest or {"peer": i})
    return rows


def all_started(tails: list[EventTail]) -> bool:
    """Whether every peer's stream has its start event (reading only new lines)."""
    for tail in tails:
        tail.poll()
    return all(t.started for t in tails)


def failure_reasons(out: Path, failed: list[int],
                    codes: dict[int, int | None]) -> dict[str, str]:
    """Why each failed peer process ended: the last exception line of its log (``RuntimeError:
    peer 2: communication thread died: ...``), else its exit code."""
    reasons = {}
    for i in failed:
        try:
            with open(out / "logs" / f"peer-{i}.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                tail = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            tail = []
        errors = [line for line in tail if line[:1].isalpha() and ("Error" in line.split(":")[0]
                                                                   or "Exception" in line)]
        reasons[str(i)] = errors[-1][:500] if errors else f"exit code {codes.get(i)}"
    return reasons
