"""Peer files: who runs where. A TOML file with one ``[[peer]]`` table per peer::

    [[peer]]
    id = 0
    address = "tcp://10.0.0.1:5555"   # what neighbours connect to
    bind = "tcp://*:5555"             # optional: what this peer binds (default: derived)
    device = "cuda:0"                 # optional: overrides [task] device for this peer
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["PeerEntry", "load_peers", "write_peers", "PeersFileError"]


class PeersFileError(ValueError):
    """A peer file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class PeerEntry:
    """One line of the peer file."""

    id: int
    address: str
    bind: str | None = None
    device: str | None = None


def load_peers(path: str | Path) -> list[PeerEntry]:
    """Read and check a peer file: ids 0..n-1, each once, with a zmq endpoint address."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PeersFileError(f"cannot read peer file {path}: {exc}") from exc
    rows = table.get("peer")
    if not isinstance(rows, list) or not rows:
        raise PeersFileError(f"{path}: needs one or more [[peer]] tables with id and address")
    entries = []
    for i, row in enumerate(rows):
        unknown = set(row) - {"id", "address", "bind", "device"}
        if unknown or not isinstance(row.get("id"), int) or not isinstance(row.get("address"), str):
            raise PeersFileError(f"{path}: [[peer]] #{i} needs integer id and string address "
                                 f"(and optional bind, device); got keys {sorted(row)}")
        if "://" not in row["address"]:
            raise PeersFileError(f"{path}: peer {row['id']} address {row['address']!r} is not a "
                                 "ZeroMQ endpoint such as tcp://host:5555")
        entries.append(PeerEntry(row["id"], row["address"], row.get("bind"), row.get("device")))
    ids = sorted(e.id for e in entries)
    if ids != list(range(len(entries))):
        raise PeersFileError(f"{path}: peer ids must be 0..{len(entries) - 1}, each once; got {ids}")
    return sorted(entries, key=lambda e: e.id)


def write_peers(path: str | Path, entries: list[PeerEntry]) -> None:
    """Write a peer file that :func:`load_peers` reads back."""
    lines = []
    for e in entries:
        lines += ["[[peer]]", f"id = {e.id}", f'address = "{e.address}"']
        if e.bind:
            lines.append(f'bind = "{e.bind}"')
        if e.device:
            lines.append(f'device = "{e.device}"')
        lines.append("")
    Path(path).write_text("\n".join(lines))
