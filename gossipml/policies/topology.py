"""Who talks to whom: gossip graphs (static and per-round) and their mixing weights.

Kinds (``TopologyConfig.kind``):

- ``ring``: a ring lattice, ``k`` neighbours (``k/2`` on each side; ``k`` even), undirected.
- ``full``: everyone with everyone.
- ``random``: each round every peer draws ``k`` out-neighbours anew from a generator seeded with
  ``(seed, round)``, so every peer computes the same graph without talking. Directed, time-varying.
- ``random_regular``: static and undirected, the union of ``k/2`` Hamiltonian cycles through a
  random order of the peers each (seeded with ``seed``; ``k`` even): degree ``k`` (a pair drawn
  twice counts once), an expander with high probability, so it mixes in ``O(log n)`` rounds with
  ``k`` links a peer: the graph for many peers of one process.
- ``exponential``: static, peer ``i`` sends to ``i + 2^j mod n`` for ``2^j < n`` (directed; Ying et
  al., "Exponential Graph is Provably Efficient for Decentralized Deep Training", NeurIPS 2021).
- ``exponential_onepeer``: the one-peer variant of the same paper: at round ``r`` peer ``i`` sends
  only to ``i + 2^(r mod tau) mod n`` with ``tau = ceil(log2 n)``. Time-varying.
- ``torus``: a 2-D wrap-around grid, 4 neighbours. Grid rule: ``rows`` is the largest divisor of
  ``n`` with ``rows <= sqrt(n)``, ``cols = n / rows``; a prime ``n > 3`` is refused (use ``ring``);
  ``n <= 3`` degenerates to a ring.
- ``edges``: an edge list read from ``path``: ``a b`` (or ``a - b``) per line is undirected,
  ``a -> b`` is directed; ``#`` starts a comment.

Weights: ``uniform`` gives peer ``i`` and each in-neighbour ``1/(d_i+1)``; ``metropolis``
(Metropolis–Hastings, Xiao & Boyd 2004) gives ``w_ij = 1/(1+max(d_i, d_j))`` and
``w_ii = 1 - sum_j w_ij`` (doubly stochastic on undirected graphs; ``d`` = in-degree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "TOPOLOGY_KINDS",
    "WEIGHT_SCHEMES",
    "TopologyConfig",
    "Topology",
    "build_topology",
    "parse_edges",
    "torus_grid",
    "spectral_gap_of",
]

WEIGHT_SCHEMES: tuple[str, ...] = ("uniform", "metropolis")


@dataclass(frozen=True)
class TopologyConfig:
    """Which graph and which mixing weights: ``kind``, ``k`` (degree for ring/random/random_regular), ``path``
    (edge list for ``edges``), ``weights`` (uniform/metropolis), ``seed`` (random graphs)."""

    kind: str = "ring"
    k: int = 2
    path: str | None = None
    weights: str = "uniform"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TOPOLOGY_KINDS:
            raise ValueError(f"unknown topology kind {self.kind!r}; choose one of "
                             f"{sorted(TOPOLOGY_KINDS)}")
        if self.weights not in WEIGHT_SCHEMES:
            raise ValueError(f"unknown topology weights {self.weights!r}; choose one of "
                             f"{list(WEIGHT_SCHEMES)}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.kind == "ring" and self.k % 2:
            raise ValueError(f"ring k must be even (k/2 neighbours on each side), got k={self.k}")
        if self.kind == "random_regular" and self.k % 2:
            raise ValueError(f"random_regular k must be even (k/2 random cycles), got k={self.k}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.kind == "edges" and not self.path:
            raise ValueError("kind 'edges' needs path = \"FILE\" "
                             "(lines 'a b' or 'a -> b')")


class _Graph(NamedTuple):
    out: tuple[tuple[int, ...], ...]
    inn: tuple[tuple[int, ...], ...]


def _graph(n: int, pairs: set[tuple[int, int]]) -> _Graph:
    """Directed (src, dst) pairs -> sorted out/in lists; self loops dropped."""
    out: list[set[int]] = [set() for _ in range(n)]
    inn: list[set[int]] = [set() for _ in range(n)]
    for a, b in pairs:
        if a != b:
            out[a].add(b)
            inn[b].add(a)
    return _Graph(tuple(tuple(sorted(s)) for s in out), tuple(tuple(sorted(s)) for s in inn))


def _undirected(pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return pairs | {(b, a) for a, b in pairs}


def _random_regular(cfg: TopologyConfig, n: int) -> _Graph:
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    pairs: set[tuple[int, int]] = set()
    for _ in range(cfg.k // 2):
        order = rng.permutation(n).tolist()
        pairs |= {(order[i], order[(i + 1) % n]) for i in range(n)}
    return _graph(n, _undirected(pairs))


def _ring(cfg: TopologyConfig, n: int) -> _Graph:
    half = cfg.k // 2
    return _graph(n, _undirected({(i, (i + s) % n) for i in range(n) for s in range(1, half + 1)}))


def _full(cfg: TopologyConfig, n: int) -> _Graph:
    return _graph(n, {(i, j) for i in range(n) for j in range(n)})


def _powers(n: int) -> list[int]:
    """Powers of two below n: 1, 2, 4, ... (tau = ceil(log2 n) of them)."""
    return [1 << j for j in range(max(0, math.ceil(math.log2(n)))) if (1 << j) < n] if n > 1 else []


def _exponential(cfg: TopologyConfig, n: int) -> _Graph:
    return _graph(n, {(i, (i + p) % n) for i in range(n) for p in _powers(n)})


def torus_grid(n: int) -> tuple[int, int]:
    """``(rows, cols)`` for ``n`` peers: rows = largest divisor of n with rows <= sqrt(n)."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0) if n > 0 else 1
    if rows == 1 and n > 3:
        raise ValueError(f"torus needs n_peers = rows*cols with rows, cols >= 2 (e.g. 4, 6, 8, 9, "
                         f"12, 16); n_peers={n} is prime: use kind='ring' or change n_peers")
    return rows, n // rows


def _torus(cfg: TopologyConfig, n: int) -> _Graph:
    rows, cols = torus_grid(n)
    pairs = set()
    for i in range(n):
        r, c = divmod(i, cols)
        pairs.add((i, r * cols + (c + 1) % cols))
        pairs.add((i, ((r + 1) % rows) * cols + c))
    return _graph(n, _undirected(pairs))


def parse_edges(text: str, source: str = "<edges>",
                n_peers: int | None = None) -> tuple[tuple[int, int, bool], ...]:
    """Parse an edge list: ``a b``/``a - b`` undirected, ``a -> b`` directed, ``#`` comments.

    Returns ``(a, b, directed)`` triples; raises ValueError naming ``source:line`` on bad lines
    (and on ids ``>= n_peers`` when given).
    """
    edges = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.replace("->", " -> ").split()
        directed = "->" in tokens
        nodes = [t for t in tokens if t not in ("->", "-")]
        if len(nodes) != 2 or len(tokens) - len(nodes) > 1:
            raise ValueError(f"{source}:{lineno}: expected 'a b', 'a - b' or 'a -> b', got {raw!r}")
        try:
            a, b = int(nodes[0]), int(nodes[1])
        except ValueError:
            raise ValueError(f"{source}:{lineno}: peer ids must be integers, got {raw!r}") from None
        if a < 0 or b < 0:
            raise ValueError(f"{source}:{lineno}: peer ids must be >= 0, got {raw!r}")
        if a == b:
            raise ValueError(f"{source}:{lineno}: self loop {a} -> {a}; remove the line")
        if n_peers is not None and max(a, b) >= n_peers:
            raise ValueError(f"{source}:{lineno}: peer {max(a, b)} is out of range for "
                             f"n_peers={n_peers} (ids run 0..{n_peers - 1})")
        edges.append((a, b, directed))
    return tuple(edges)


def _edges(cfg: TopologyConfig, n: int) -> _Graph:
    path = Path(str(cfg.path))
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read topology edge list {path}: {exc.strerror}") from exc
    pairs: set[tuple[int, int]] = set()
    for a, b, directed in parse_edges(text, str(path), n_peers=n):
        pairs.add((a, b))
        if not directed:
            pairs.add((b, a))
    return _graph(n, pairs)


def _random_at(cfg: TopologyConfig, n: int, round_: int) -> _Graph:
    """Each peer draws min(k, n-1) distinct out-neighbours; rng seeded by (seed, round)."""
    rng = np.random.default_rng([cfg.seed, round_])
    k = min(cfg.k, n - 1)
    pairs = set()
    for i in range(n):
        others = np.array([j for j in range(n) if j != i], dtype=np.int64)
        for j in rng.choice(others, size=k, replace=False) if k > 0 else ():
            pairs.add((i, int(j)))
    return _graph(n, pairs)


def _onepeer_at(cfg: TopologyConfig, n: int, round_: int) -> _Graph:
    powers = _powers(n)
    if not powers:
        return _graph(n, set())
    p = powers[round_ % len(powers)]
    return _graph(n, {(i, (i + p) % n) for i in range(n)})


_STATIC: dict[str, Callable[[TopologyConfig, int], _Graph]] = {
    "ring": _ring, "full": _full, "exponential": _exponential, "torus": _torus, "edges": _edges,
    "random_regular": _random_regular,
}
_DYNAMIC: dict[str, Callable[[TopologyConfig, int, int], _Graph]] = {
    "random": _random_at, "exponential_onepeer": _onepeer_at,
}
TOPOLOGY_KINDS: tuple[str, ...] = (*_STATIC, *_DYNAMIC)


def spectral_gap_of(w: np.ndarray) -> float:
    """``1 - |lambda_2|``: one minus the second-largest eigenvalue magnitude of a mixing matrix."""
    n = w.shape[0]
    if n <= 1:
        return 1.0
    eig = np.linalg.eigvalsh(w) if np.allclose(w, w.T) else np.linalg.eigvals(w)
    mags = np.sort(np.abs(eig))[::-1]
    return float(max(0.0, 1.0 - mags[1]))


class Topology:
    """A graph over peers ``0..n-1`` (possibly changing every round) with its mixing weights."""

    def __init__(self, cfg: TopologyConfig, n_peers: int) -> None:
        if isinstance(n_peers, bool) or not isinstance(n_peers, int) or n_peers < 1:
            raise ValueError(f"n_peers must be an integer >= 1, got {n_peers!r}")
        self.config, self.n_peers = cfg, n_peers
        self.is_static = cfg.kind in _STATIC
        self._static = _STATIC[cfg.kind](cfg, n_peers) if self.is_static else None
        self._cache: dict[int, _Graph] = {}

    def _at(self, round_: int) -> _Graph:
        if self._static is not None:
            return self._static
        if round_ < 0:
            raise ValueError(f"round must be >= 0, got {round_}")
        g = self._cache.get(round_)
        if g is None:
            if len(self._cache) >= 8:  # a peer looks at a few recent rounds only
                self._cache.pop(next(iter(self._cache)))
            g = self._cache[round_] = _DYNAMIC[self.config.kind](self.config, self.n_peers, round_)
        return g

    def _check(self, peer: int) -> None:
        if not 0 <= peer < self.n_peers:
            raise ValueError(f"peer {peer} out of range; ids run 0..{self.n_peers - 1}")

    def out_neighbors(self, peer: int, round: int = 0) -> tuple[int, ...]:
        """The peers ``peer`` sends to at ``round`` (sorted, no self, no duplicates)."""
        self._check(peer)
        return self._at(round).out[peer]

    def in_neighbors(self, peer: int, round: int = 0) -> tuple[int, ...]:
        """The peers ``peer`` expects models from at ``round``."""
        self._check(peer)
        return self._at(round).inn[peer]

    @property
    def mutual(self) -> bool:
        """Static and undirected: every neighbour waits for this peer as it waits for them."""
        g = self._static
        return g is not None and all(o == i for o, i in zip(g.out, g.inn))

    def links(self, peer: int) -> tuple[int, ...]:
        """Every peer ``peer`` sends to or hears from in some round (sorted, no self): the graph's
        neighbours when static, the union over its period for ``exponential_onepeer``, everyone
        for ``random``. A peer keeps a link (a socket) to each."""
        self._check(peer)
        if self._static is not None:
            rounds: range = range(1)
        elif self.config.kind == "exponential_onepeer":
            rounds = range(max(1, len(_powers(self.n_peers))))
        else:
            return tuple(j for j in range(self.n_peers) if j != peer)
        ids: set[int] = set()
        for r in rounds:
            g = self._static or _DYNAMIC[self.config.kind](self.config, self.n_peers, r)
            ids.update(g.out[peer], g.inn[peer])
        ids.discard(peer)
        return tuple(sorted(ids))

    def mixing_weights(self, peer: int, round: int = 0) -> dict[int, float]:
        """Row ``peer`` of W at ``round``: self and in-neighbours, summing to 1 (see module doc)."""
        self._check(peer)
        g = self._at(round)
        inn = g.inn[peer]
        if self.config.weights == "uniform":
            w = 1.0 / (len(inn) + 1)
            return {peer: w, **{j: w for j in inn}}
        d_i = len(inn)
        row = {j: 1.0 / (1 + max(d_i, len(g.inn[j]))) for j in inn}
        return {peer: 1.0 - sum(row.values()), **row}

    def mixing_matrix(self, round: int = 0) -> np.ndarray:
        """The ``n x n`` matrix W with ``W[i, j] = mixing_weights(i, round)[j]`` (rows sum to 1)."""
        w = np.zeros((self.n_peers, self.n_peers))
        for i in range(self.n_peers):
            for j, v in self.mixing_weights(i, round).items():
                w[i, j] = v
        return w

    def spectral_gap(self) -> float | None:
        """``1 - |lambda_2(W)|`` of a static graph (1: one-step mixing); None if time-varying."""
        return spectral_gap_of(self.mixing_matrix(0)) if self.is_static else None

    def __repr__(self) -> str:
        return f"Topology({self.config.kind!r}, n_peers={self.n_peers}, static={self.is_static})"


def build_topology(cfg: TopologyConfig | None, n_peers: int) -> Topology:
    """The topology of ``cfg`` (default: ring) over ``n_peers`` peers; bad graphs raise here."""
    return Topology(cfg if cfg is not None else TopologyConfig(), n_peers)
