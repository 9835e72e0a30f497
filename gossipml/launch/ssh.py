"""Start one ``gossipml peer`` per slot of a hosts file over plain ``ssh`` (a handful of machines).

Hosts file: one host per line, ``[user@]host [slots=N]``; ``#`` starts a comment. A target is
checked whole against a strict character set (user: letters, digits, ``._-``; host: letters,
digits, ``.-``, neither starting with ``-``), so no line can smuggle an ssh option such as
``-oProxyCommand=...`` or a shell character; ``--`` ends ssh's options before it. Slots get peer
ids in file order; slot ``s`` of a host listens on ``base_port + s``. The peer file (the same on
every host: a shared folder, or copy it first) says who is where; :func:`peer_entries_for_hosts`
makes one from the hosts file. Building the command lines is pure; :func:`run_commands` runs them
with ``subprocess`` and a timeout.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gossipml.launch.peersfile import PeerEntry

__all__ = ["HostSlot", "SshCommand", "parse_hosts", "load_hosts", "peer_entries_for_hosts",
           "build_ssh_commands", "run_commands", "DEFAULT_SSH_OPTIONS", "check_target"]

#: Never prompt, fail fast on an unreachable host, and stop the remote peer when ssh dies.
DEFAULT_SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-tt")


_TARGET = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,31}@)?"
                     r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def check_target(target: str, where: str = "ssh target") -> str:
    """``target`` if it is a plain ``[user@]host``; ValueError naming ``where`` otherwise."""
    if not _TARGET.fullmatch(target):
        raise ValueError(f"{where}: {target!r} is not a plain [user@]host (user: letters, digits, "
                         "'._-'; host: letters, digits, '.-'; neither may start with '-'); "
                         "ssh options and shell characters are refused: put options in "
                         "~/.ssh/config")
    return target


@dataclass(frozen=True)
class HostSlot:
    """One peer to start: its id, the ssh target (``user@host``) and the bare host name."""

    peer_id: int
    target: str
    host: str
    slot: int


@dataclass(frozen=True)
class SshCommand:
    """The argv that starts ``peer_id`` on ``target``."""

    peer_id: int
    target: str
    argv: tuple[str, ...]


def parse_hosts(text: str, source: str = "hosts file") -> list[HostSlot]:
    """Parse hosts-file text into slots with peer ids 0..n-1."""
    slots: list[HostSlot] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        target, options = words[0], words[1:]
        count = 1
        for opt in options:
            key, _, value = opt.partition("=")
            if key != "slots" or not (value.isascii() and value.isdigit()) or int(value) < 1:
                raise ValueError(f"{source}:{lineno}: unknown option {opt!r}; "
                                 "lines read '[user@]host [slots=N]'")
            count = int(value)
        host = check_target(target, f"{source}:{lineno}").rsplit("@", 1)[-1]
        slots += [HostSlot(len(slots) + s, target, host, s) for s in range(count)]
    if not slots:
        raise ValueError(f"{source}: no hosts; write one '[user@]host [slots=N]' per line")
    return slots


def load_hosts(path: str | Path) -> list[HostSlot]:
    """Read a hosts file (see the module docstring)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read hosts file {path}: {exc}") from exc
    return parse_hosts(text, str(path))


def peer_entries_for_hosts(slots: Sequence[HostSlot], base_port: int = 5555) -> list[PeerEntry]:
    """A peer file's entries for ``slots``: ``tcp://host:base_port+slot``, bound on all interfaces."""
    return [PeerEntry(s.peer_id, f"tcp://{s.host}:{base_port + s.slot}",
                      bind=f"tcp://*:{base_port + s.slot}") for s in slots]


def build_ssh_commands(slots: Sequence[HostSlot], peers_file: str, experiment: str | None = None,
                       *, gossipml: str = "gossipml", workdir: str | None = None,
                       extra_args: Sequence[str] = (), ssh: str = "ssh",
                       ssh_options: Sequence[str] = DEFAULT_SSH_OPTIONS) -> list[SshCommand]:
    """One ``ssh OPTIONS -- <target> 'cd WORKDIR && exec gossipml peer [EXP] --peers FILE --id ID'``
    per slot (each target checked again: slots need not come from :func:`parse_hosts`)."""
    commands = []
    for s in slots:
        check_target(s.target, f"peer {s.peer_id}")
        remote = [*shlex.split(gossipml), "peer"]
        remote += [experiment] if experiment else []
        remote += ["--peers", peers_file, "--id", str(s.peer_id), *extra_args]
        line = "exec " + shlex.join(remote)
        if workdir:
            line = f"cd {shlex.quote(workdir)} && {line}"
        commands.append(SshCommand(s.peer_id, s.target, (ssh, *ssh_options, "--", s.target, line)))
    return commands


def run_commands(commands: Sequence[SshCommand], timeout_s: float,
                 log_dir: str | Path | None = None) -> dict[int, int]:
    """Start every command, wait at most ``timeout_s`` in all, kill what is left; exit code per peer.

    A peer killed for running past the timeout reports -9. Output goes to
    ``log_dir/peer-<id>.log`` when given, else it is discarded.
    """
    procs: dict[int, subprocess.Popen] = {}
    files = []
    try:
        for c in commands:
            out = subprocess.DEVNULL
            if log_dir is not None:
                Path(log_dir).mkdir(parents=True, exist_ok=True)
                out = open(Path(log_dir) / f"peer-{c.peer_id}.log", "wb")  # noqa: SIM115
                files.append(out)
            procs[c.peer_id] = subprocess.Popen(c.argv, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        codes: dict[int, int] = {}
        for peer_id, p in procs.items():
            try:
                codes[peer_id] = p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[peer_id] = p.wait(timeout=30)
        return codes
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        for f in files:
            f.close()
