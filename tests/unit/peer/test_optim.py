"""GossipOptimizer: the wrapped optimizer steps, then the peer; a merging round clears L-BFGS."""

from __future__ import annotations

import torch

from gossipml.peer import GossipOptimizer


def _step(optimizer: GossipOptimizer, model: torch.nn.Module) -> None:
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (model.weight ** 2).sum() + model.bias.sum() ** 2
        loss.backward()
        return loss

    optimizer.step(closure)


def test_each_step_updates_then_gossips_and_a_merge_clears_lbfgs(memory_peers):
    peers = memory_peers([0.0, 2.0], {"pacing": {"mode": "async", "interval_steps": 2}})
    opts = [GossipOptimizer(torch.optim.LBFGS(p.model.parameters(), lr=0.1, history_size=3), p)
            for p in peers]
    _step(opts[0], peers[0].model)
    _step(opts[1], peers[1].model)
    assert peers[1].local_steps == 1 and opts[1].last_round is None  # no round ended yet
    assert opts[1].optimizer.state[opts[1].param_groups[0]["params"][0]]  # L-BFGS has history
    _step(opts[0], peers[0].model)  # round 0 of peer 0: publishes (nothing to merge yet)
    assert opts[0].last_round is not None and opts[0].last_round["merged"] == []
    assert opts[0].optimizer.state[opts[0].param_groups[0]["params"][0]]  # kept: no merge
    _step(opts[1], peers[1].model)  # round 0 of peer 1: merges peer 0's model
    assert opts[1].last_round["merged"] == [0]
    assert not opts[1].optimizer.state[opts[1].param_groups[0]["params"][0]]  # cleared


def test_everything_else_is_the_wrapped_optimizer(memory_peers):
    peer = memory_peers([1.0, 1.0], {"pacing": {"mode": "async"}})[0]
    sgd = torch.optim.SGD(peer.model.parameters(), lr=0.5, momentum=0.9)
    opt = GossipOptimizer(sgd, peer)
    assert opt.param_groups is sgd.param_groups
    peer.model.weight.grad = torch.ones_like(peer.model.weight)
    opt.step()
    assert torch.allclose(peer.model.weight, torch.full_like(peer.model.weight, 0.5))
    state = opt.state_dict()
    opt.zero_grad()
    assert peer.model.weight.grad is None
    opt.load_state_dict(state)
    assert opt.state_dict()["param_groups"] == state["param_groups"] and peer.local_steps == 1
