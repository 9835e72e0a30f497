"""A topology drawn from a live membership view: peers that know only a few seed addresses.

``[membership] enabled = true`` replaces the fixed graph of ``[topology]``: the peer keeps a
Cyclon view (:mod:`gossipml.policies.membership`), shuffles it with a random view member (or a
seed) every ``shuffle_interval_s``, and each round pushes its model to ``fanout`` peers sampled
from the live view. A peer that falls silent leaves every view after ``dead_after_s``; a new or
restarted peer joins through any seed. The membership state is shared by the training thread
(sampling) and the communication thread (shuffles), so every access holds one lock.

Admission (:class:`SwarmLink`). Only confirmed peers are view members: only they get pushes,
heartbeats and pulls answered, and only their models are stored and merged (the inbound side
refuses the rest as ``not_in_view``). A peer is confirmed when it answers, with the id it
claims, a *probe* sent over a DEALER dialled to its address: a view message carrying a random
``nonce`` that only a listener at that address can see and echo back (``echo``). A probed peer
probes back the same way, so one exchange confirms both sides. The rule for dialling at all: a
seed address, or an address whose host is *vouched*: a host some connection to this peer came
from (ZeroMQ's ``Peer-Address``), or one a confirmed seed relays. So a forged address naming a
host that never spoke to this peer is never dialled, a forged id at an address where nobody
answers never becomes a member, and peers relay confirmed members only. DEALERs are closed when
their peer leaves the view; at most ``view_size + max_probes + len(seeds)`` are open at once.
One probe at a time per address. Limits (in the clear): a source can have this peer dial ports
on its own host, and one answering probes at many ports can join under as many ids (a Sybil), at
``max_new_per_shuffle`` new ids per source and ``max_probes`` probes at a time; CURVE's
allow-list is the answer to both."""

from __future__ import annotations

import collections
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gossipml.comm.port import Port
from gossipml.comm.transport import Outgoing
from gossipml.policies.membership import Membership, MembershipConfig, parse_tcp_address
from gossipml.wire import Message, pack

__all__ = ["SwarmTopology", "SwarmLink", "seed_dealers", "PROBE_RESEND_S", "MAX_VOUCHED_HOSTS"]

#: A probe is sent again this often until answered (a DEALER drops what it is handed before its
#: connection is up).
PROBE_RESEND_S = 0.05
#: Hosts remembered as having connected to this peer (least recently seen forgotten first).
MAX_VOUCHED_HOSTS = 256


class SwarmTopology:
    """The Topology interface over a live view (time-varying: no spectral gap)."""

    is_static = False
    mutual = False  # views are not symmetric: nothing bounds how far ahead a member runs

    def __init__(self, cfg: MembershipConfig, self_id: int, self_address: str, seed: int) -> None:
        self.cfg = cfg
        self.self_id = self_id
        self.membership = Membership(
            self_id, self_address, list(cfg.seeds), cfg.view_size, cfg.shuffle_size,
            cfg.dead_after_s, seed=seed, max_new_per_shuffle=cfg.max_new_per_shuffle,
            min_relayed_age_s=cfg.shuffle_interval_s)
        self._seed = seed
        self._lock = threading.Lock()
        self._last_shuffle_s = 0.0

    def _now(self) -> float:
        return time.monotonic()

    def live(self) -> dict[int, str]:
        """Live peers of the view: id -> address."""
        with self._lock:
            self.membership.expire(self._now())
            return self.membership.live_peers()

    def out_neighbors(self, peer: int, round: int = 0) -> tuple[int, ...]:
        """``fanout`` live peers drawn for this round (seeded by seed, peer and round)."""
        rng = np.random.default_rng([self._seed, peer, round])
        with self._lock:
            self.membership.expire(self._now())
            return tuple(sorted(self.membership.sample(self.cfg.fanout, rng)))

    def in_neighbors(self, peer: int, round: int = 0) -> tuple[int, ...]:
        """Everyone live may push to this peer."""
        return tuple(sorted(self.live()))

    def mixing_weights(self, peer: int, round: int = 0) -> dict[int, float]:
        """No fixed weights: the peer averages uniformly over what it merges."""
        return {}

    def spectral_gap(self) -> float | None:
        """Time-varying graph: none."""
        return None

    def is_member(self, peer_id: int) -> bool:
        """Whether ``peer_id`` is a confirmed member of the view."""
        with self._lock:
            return self.membership.is_member(peer_id)

    def heard(self, peer_id: int, address: str | None) -> bool:
        """First-hand news of a member (refreshed at its confirmed address); False for others."""
        with self._lock:
            return self.membership.heard(peer_id, address, self._now())

    def confirm(self, peer_id: int, address: str) -> None:
        """``peer_id`` proved it answers at ``address``: a member now."""
        with self._lock:
            self.membership.confirm(peer_id, address, self._now())

    def candidates(self) -> list[Any]:
        """Candidates to probe, oldest news first."""
        with self._lock:
            return sorted(self.membership.candidates.values(), key=lambda c: c.heard_s)

    def note_candidate(self, peer_id: int, address: str) -> bool:
        """An id's own claim to be at ``address`` (False when the table is full)."""
        with self._lock:
            return self.membership.note_candidate(peer_id, address, self._now())

    def drop_candidate(self, peer_id: int, reason: str = "") -> None:
        """Forget a candidate (counted under ``reason`` when given)."""
        with self._lock:
            self.membership.drop_candidate(peer_id)
            if reason:
                self.membership.ignored[reason] += 1

    def take_departed(self) -> list[int]:
        """Ids that left the view since the last call (expired or evicted)."""
        with self._lock:
            self.membership.expire(self._now())
            return self.membership.take_departed()

    def ignored(self) -> dict[str, int]:
        """Entries and candidates ignored so far, by reason."""
        with self._lock:
            return dict(self.membership.ignored)

    def due_shuffle(self) -> tuple[str, list[Any]] | None:
        """``(target address, entries)`` when a shuffle is due, else None."""
        now = self._now()
        with self._lock:
            if now - self._last_shuffle_s < self.cfg.shuffle_interval_s:
                return None
            self._last_shuffle_s = now
            return self.membership.make_shuffle(now)

    def reply_entries(self, exclude: tuple[int, ...] = ()) -> list[Any]:
        """Our fresh entry plus random members (what a probe or its answer carries)."""
        with self._lock:
            return self.membership.reply_entries(self._now(), exclude)

    def on_shuffle(self, entries: Any, sender: int, via_seed: bool = False) -> list[Any]:
        """Merge a member's shuffle and return the reply entries (ValueError for hostile input)."""
        with self._lock:
            return self.membership.on_shuffle(entries, sender, self._now(), via_seed=via_seed)

    def on_reply(self, entries: Any, sender: int | None = None, via_seed: bool = False) -> None:
        """Merge a member's shuffle reply (ValueError for hostile input)."""
        with self._lock:
            self.membership.on_reply(entries, self._now(), sender, via_seed=via_seed)


def seed_dealers(seeds: tuple[str, ...], own_address: str) -> dict[int, str]:
    """Seeds have no known peer id yet: their DEALERs get the ids -1, -2, ..."""
    return {-(i + 1): addr for i, addr in enumerate(seeds) if addr != own_address}


@dataclass
class _Probe:
    """A DEALER dialled to ``address`` (key: the candidate's id, or a seed's -k) and the nonce
    the peer there must echo; ``echo`` is the nonce of theirs we answer in the same message."""

    address: str
    nonce: int
    started_s: float
    sent_s: float = 0.0
    echo: int | None = None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host(address: str) -> str | None:
    parsed = parse_tcp_address(address)
    return None if parsed is None else parsed[0]


class SwarmLink:
    """The swarm side of a peer's communication thread: admission (probes, vouched hosts),
    shuffles, and the DEALERs of members. Every method runs on the communication thread."""

    def __init__(self, swarm: SwarmTopology, transport: Port, self_id: int, address: str,
                 seeds: dict[int, str], reject: Callable[[int, str, str], None],
                 can_dial: Callable[[int], bool] | None = None) -> None:
        self.swarm = swarm
        self.transport = transport
        self.self_id = self_id
        self.address = address
        self._seeds = dict(seeds)  # -k -> seed address
        self._seed_peer: dict[str, int] = {}  # seed address -> the id confirmed there
        self._reject = reject
        self._can_dial = can_dial or (lambda _: True)
        self._probes: dict[int, _Probe] = {}
        self.dealers: set[int] = set(seeds)  # DEALERs open now (the transport made the seeds')
        self.connected: set[int] = set()  # members with a DEALER (who may pull)
        self._vouched: collections.OrderedDict[str, None] = collections.OrderedDict()
        for addr in self._seeds.values():
            self._vouch(_host(addr))
        self._source_host: str | None = None
        self._leave_hooks: list[Callable[[int], None]] = []

    def on_leave(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(peer_id)`` (on this thread) when a peer leaves the view."""
        self._leave_hooks.append(hook)

    def _vouch(self, host: str | None) -> None:
        if host is None:
            return
        self._vouched[host] = None
        self._vouched.move_to_end(host)
        while len(self._vouched) > MAX_VOUCHED_HOSTS:
            self._vouched.popitem(last=False)

    def admit(self, msg: Message, source_host: str | None) -> bool:
        """Note who a message came from; True when its sender is a member (any kind is let
        through) or it is a view message (the way to become one)."""
        self._source_host = source_host
        self._vouch(source_host)
        if self.swarm.heard(msg.sender, None):  # liveness: the id spoke, whatever it claims
            return True
        return msg.kind == "view"

    # ---- inbound view messages ----------------------------------------------------------
    def on_view(self, msg: Message, clock: int) -> None:
        """A shuffle, a reply, a probe or a probe's answer (see the module docstring)."""
        s, info = msg.sender, msg.info
        nonce = info.get("nonce")
        if info.get("echo") is not None:
            self._on_echo(s, info["echo"])
        if not self.swarm.is_member(s):  # a probe, or a peer that holds us and we not it
            return self._answer_stranger(s, info.get("address"), nonce, clock)
        via_seed = self._is_seed_peer(s)
        try:
            if info.get("reply"):
                self.swarm.on_reply(info.get("entries", []), s, via_seed)
                if nonce is not None:
                    self._send(s, clock, self.swarm.reply_entries(), reply=True, echo=nonce)
                return
            entries = self.swarm.on_shuffle(info.get("entries", []), s, via_seed)
        except ValueError as exc:
            return self._reject(s, "bad_view", str(exc))
        self._send(s, clock, entries, reply=True, echo=nonce)

    def _on_echo(self, sender: int, echo: int) -> None:
        """A probe answered: the sender holds the id it claims at the address we dialled."""
        key = next((k for k, p in self._probes.items() if p.nonce == echo
                    and (k == sender or k < 0)), None)
        if key is None or sender == self.self_id:
            return  # an old probe's answer, already confirmed or given up
        probe = self._probes.pop(key)
        self._probes.pop(sender, None)
        if key < 0:  # a seed: its DEALER moves to the seed's real id
            self.transport.disconnect(key)
            self.dealers.discard(key)
            self._seed_peer[probe.address] = sender
            self._dial(sender, probe.address)
        self.swarm.confirm(sender, probe.address)
        self.connected.add(sender)
        self._handle_departed()

    def _answer_stranger(self, s: int, address: Any, nonce: int | None, clock: int) -> None:
        """A view from a peer not in the view: probe it at the address it claims (echoing its
        nonce, if it sent one), if that address may be dialled. Its entries are not merged."""
        probe = self._probes.get(s)
        if probe is None:
            if not isinstance(address, str) or not self._may_dial(s, address, via_seed=False):
                return self._reject(s, "not_in_view", f"a probe from {s} at an address not "
                                    f"dialled: {address!r:.80}")
            if self._probe_slots() <= 0 or self._probing(address):
                return self.swarm.drop_candidate(s, "probes_busy")
            probe = self._start_probe(s, address)
        probe.echo = nonce if nonce is not None else probe.echo
        self._send_probe(s, probe, clock, reply=probe.echo is not None)

    def _is_seed_peer(self, s: int) -> bool:
        """``s`` was confirmed at a seed address (and, when known, speaks from that host)."""
        addr = next((a for a, j in self._seed_peer.items() if j == s), None)
        if addr is None:
            return False
        host = _host(addr)  # a seed named by hostname cannot be matched to the IP it speaks from
        return self._source_host is None or host is None or self._source_host == host \
            or not _is_ip(host)

    def _may_dial(self, peer_id: int, address: str, *, via_seed: bool) -> bool:
        host = _host(address)
        return (host is not None and (via_seed or host in self._vouched)
                and peer_id != self.self_id and self._can_dial(peer_id))

    # ---- the tick: departures, probes, shuffles -----------------------------------------
    def shuffle(self, clock: int) -> None:
        """Close the DEALERs of peers that left; time out, start and resend probes; start a
        shuffle with a member or a seed when one is due."""
        now = time.monotonic()
        self._handle_departed()
        self._expire_probes(now)
        self._start_probes(now, clock)
        for key, probe in list(self._probes.items()):
            if now - probe.sent_s >= PROBE_RESEND_S:
                self._send_probe(key, probe, clock, reply=probe.echo is not None)
        due = self.swarm.due_shuffle()
        if due is None:
            return
        address, entries = due
        dest = {a: j for j, a in self.swarm.live().items()}.get(address)
        if dest is not None:
            return self._send(dest, clock, entries, reply=False)
        key = next((k for k, a in self._seeds.items() if a == address), None)
        if key is not None and key not in self._probes:  # (re)join through a seed
            if key not in self.dealers:
                self._dial(key, address)
            self._send_probe(key, self._start_probe(key, address, dial=False), clock,
                             reply=False)

    def _handle_departed(self) -> None:
        for j in self.swarm.take_departed():
            if j in self._probes:
                continue
            self._close(j)
            self.connected.discard(j)
            for addr in [a for a, p in self._seed_peer.items() if p == j]:
                del self._seed_peer[addr]
            for hook in self._leave_hooks:
                hook(j)

    def _expire_probes(self, now: float) -> None:
        for key, probe in list(self._probes.items()):
            if now - probe.started_s > self.swarm.cfg.probe_timeout_s:
                del self._probes[key]
                if key >= 0:  # a seed keeps its DEALER: the next seed shuffle probes again
                    self._close(key)
                    self.swarm.drop_candidate(key, "probe_timeout")

    def _start_probes(self, now: float, clock: int) -> None:
        for c in self.swarm.candidates():
            if self._probe_slots() <= 0:
                return
            busy = c.peer_id in self._probes or self._probing(c.address)
            if busy or self.swarm.is_member(c.peer_id):
                continue
            if not self._may_dial(c.peer_id, c.address, via_seed=c.via_seed):
                self.swarm.drop_candidate(c.peer_id, "not_dialled")
                continue
            self._send_probe(c.peer_id, self._start_probe(c.peer_id, c.address), clock,
                             reply=False)

    def _probe_slots(self) -> int:
        return self.swarm.cfg.max_probes - sum(k >= 0 for k in self._probes)

    def _probing(self, address: str) -> bool:  # ids invented at one dead address: one slot
        return any(p.address == address for k, p in self._probes.items() if k >= 0)

    def _start_probe(self, key: int, address: str, dial: bool = True) -> _Probe:
        if dial:
            self._dial(key, address)
        probe = _Probe(address, secrets.randbits(62), time.monotonic())
        self._probes[key] = probe
        return probe

    def _send_probe(self, key: int, probe: _Probe, clock: int, *, reply: bool) -> None:
        probe.sent_s = time.monotonic()
        self._send(key, clock, self.swarm.reply_entries(), reply=reply, nonce=probe.nonce,
                   echo=probe.echo)

    def _dial(self, key: int, address: str) -> None:
        if key in self.dealers:
            self.transport.disconnect(key)
        self.transport.connect(key, address)
        self.dealers.add(key)

    def _close(self, key: int) -> None:
        if key in self.dealers:
            self.transport.disconnect(key)
            self.dealers.discard(key)

    def _send(self, dest: int, clock: int, entries: list[Any], *, reply: bool,
              nonce: int | None = None, echo: int | None = None) -> None:
        info: dict[str, Any] = {"entries": entries, "reply": reply, "address": self.address}
        if nonce is not None:
            info["nonce"] = nonce
        if echo is not None:
            info["echo"] = echo
        msg = Message(kind="view", sender=self.self_id, round=clock, info=info)
        self.transport.submit(Outgoing((dest,), lambda: pack(msg)))
