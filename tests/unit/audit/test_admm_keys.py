"""Key audit (issue #16): the ADMM keys of ``[aggregation]`` change what a peer computes."""

from __future__ import annotations

import torch

from gossipml.aggregation import build_aggregator
from gossipml.aggregation.base import Contribution
from gossipml.config import ExperimentConfig
from gossipml.launch.local import task_aggregation_context
from gossipml.tasks import build_task


def _cfg(**aggregation) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "run": {"n_peers": 2, "seed": 1}, "data": {"dataset": "digits"},
        "task": {"model": "logreg", "weight_decay": 0.01},
        "topology": {"kind": "full"}, "pacing": {"mode": "sync"},
        "aggregation": {"rule": "admm", **aggregation}})


def _prox_output(**aggregation) -> dict[str, torch.Tensor]:
    cfg = _cfg(**aggregation)
    torch.manual_seed(0)
    task = build_task(cfg.task, cfg.data, 0, cfg.run.n_peers, cfg.run.seed)
    prox = task_aggregation_context(task, cfg)["prox"]
    v = {n: torch.zeros_like(p) for n, p in task.model.state_dict().items()}
    return prox(v, 0.5)


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.allclose(a[n], b[n]) for n in a)


def test_prox_steps_sets_how_far_the_local_step_goes():
    assert _differs(_prox_output(prox_steps=1), _prox_output(prox_steps=20))


def test_prox_lr_sets_the_local_step_size():
    assert _differs(_prox_output(prox_steps=3, prox_lr=0.01), _prox_output(prox_steps=3, prox_lr=0.5))


def test_prox_batch_size_sets_the_data_of_each_local_step():
    assert _differs(_prox_output(prox_steps=3, prox_batch_size=0),
                    _prox_output(prox_steps=3, prox_batch_size=4))


def _admm_step(**aggregation) -> tuple[object, dict[str, torch.Tensor]]:
    agg = build_aggregator(_cfg(**aggregation).aggregation)
    own = {"w": torch.zeros(3)}
    other = Contribution(sender=1, round=0, params={"w": torch.ones(3)})
    return agg, agg.aggregate(own, [other], 0.5, own_round=0)


def test_rho_sets_the_pull_toward_the_neighbours():
    _, low = _admm_step(rho=0.1)
    _, high = _admm_step(rho=1.0)
    assert not torch.allclose(low["w"], high["w"])


def test_asynchronous_pairs_duals_by_version():
    sync, _ = _admm_step(asynchronous=False)
    asynchronous, _ = _admm_step(asynchronous=True)
    # the asynchronous form asks the round loop for every held version of a neighbour and steps
    # even with no news; the synchronous one takes the round's model only
    assert (sync.wants_every_version, asynchronous.wants_every_version) == (False, True)
    assert sync.state_dict()["admm_duals"] and not asynchronous.state_dict()["admm_duals"]
