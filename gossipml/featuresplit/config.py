"""Which experiment keys feature split honours and which it refuses, decided in one place.

Feature split (``[run] mode = "feature_split"``) is not gossip averaging: every step, every peer
needs every other peer's exact partial product, so it is synchronous, all-to-all and uncompressed
by construction, and it runs its own optimiser (minibatch SGD, then accelerated full-batch
gradient descent). :func:`check_feature_split` holds every key of every table against
:data:`RULES`; a key is either honoured (any valid value changes what runs), allowed only at the
values the mode really runs, or refused at any value but its default. A key that is in no rule
(a table grown since) is refused when set, so nothing is ever ignored in silence.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gossipml.errors import ConfigError
from gossipml.tasks.config import LINEAR_MODELS

__all__ = ["KeyRule", "RULES", "check_feature_split", "feature_split_problems"]


@dataclass(frozen=True)
class KeyRule:
    """``allowed`` None: honoured at any value; ``()``: only its default; else these values."""

    allowed: tuple[Any, ...] | None
    why: str = ""


HONOURED = KeyRule(None)


def _only(*values: Any, why: str) -> KeyRule:
    return KeyRule(tuple(values), why)


def _default(why: str) -> KeyRule:
    return KeyRule((), why)


_NO_SAMPLE_SPLIT = ("feature split gives every peer all samples (its block of their columns); "
                    "it does not split samples")
_GOSSIP_PEER = "it is a key of the gossip peer's round loop, which feature split does not run"
_OWN_OPT = ("feature split runs minibatch SGD at the constant [task] lr for [peer] rounds steps, "
            "then accelerated full-batch gradient descent (step 1/L) to convergence")
_NO_AGG = ("feature split aggregates nothing: each peer owns its block of the weights and the "
           "partial products are summed exactly")

#: table -> key -> rule. Kept in step with the table in :func:`check_feature_split`'s docstring.
RULES: dict[str, dict[str, KeyRule]] = {
    "run": {"n_peers": HONOURED, "deadline_s": HONOURED, "seed": HONOURED,
            "torch_threads": HONOURED, "mode": HONOURED,
            "start_method": _default(why="it picks how gossipml run starts gossip peer "
                                     "processes; feature split runs its peers as threads there"),
            "comm_threads": _default(why="it sets how many communication threads gossip peers "
                                     "of one process share; feature split peers keep their own")},
    "data": {"dataset": HONOURED, "path": HONOURED, "dataset_args": HONOURED,
             "synthetic_features": HONOURED,
             "synthetic_classes": HONOURED, "synthetic_noise": HONOURED,
             "synthetic_train_size": HONOURED, "synthetic_test_size": HONOURED,
             "seed": HONOURED,  # synthetic datasets only: see _data_seed_problem
             **{k: _default(_NO_SAMPLE_SPLIT) for k in
                ("partition", "alpha", "shards_per_peer", "sample_fraction", "min_samples")},
             "stream": _default("feature split trains on a fixed training set (full-batch "
                                "phase); streams are not supported")},
    "task": {"model": _only(*LINEAR_MODELS, why="feature split splits a linear model's weight "
                            "columns; other models do not decompose into partial products"),
             "optimizer": _only("sgd", why=_OWN_OPT),
             "lr": HONOURED, "momentum": HONOURED, "weight_decay": HONOURED,
             "batch_size": HONOURED,
             "device": _only("auto", "cpu", why="feature split computes on the CPU in float64 so "
                             "that every peer sums bit-identical margins"),
             "eval_batch_size": _default("feature split evaluates the whole test set in one "
                                         "exchange of partial products"),
             "eval_max_samples": _default("feature split evaluates the whole test set in one "
                                          "exchange of partial products"),
             "hidden": _default("linear models have no hidden layer"),
             "same_init": _only(True, why="every block starts at zero on every peer"),
             **{k: _default(_OWN_OPT) for k in
                ("lbfgs_max_iter", "lbfgs_history", "lr_schedule", "lr_min_factor",
                 "lr_milestones", "lr_gamma", "warmup_steps", "lr_decay_steps")},
             **{k: _default("feature split trains its own linear models with their own losses")
                for k in ("model_args", "loss", "metric")},
             "import_path": HONOURED},  # finds a 'module:callable' [data] dataset
    "peer": {"rounds": HONOURED, "eval_every_rounds": HONOURED, "startup_timeout_s": HONOURED,
             **{k: _default(_GOSSIP_PEER) for k in
                ("consensus_step", "keyframe_every_rounds", "keyframe_codec",
                 "refresh_every_rounds", "refresh_codec", "attack", "attackers",
                 "checkpoint_dir", "checkpoint_every_rounds")}},
    "transport": {"max_message_bytes": HONOURED, "send_hwm": HONOURED, "recv_hwm": HONOURED,
                  "max_connections": HONOURED,
                  "linger_s": HONOURED, "send_timeout_s": HONOURED,
                  "poll_interval_s": HONOURED, "shm": HONOURED, "shm_min_bytes": HONOURED,
                  "curve_keys_dir": HONOURED},  # gossipml peer only; the threads runner refuses
    "pacing": {"mode": _only("sync", why="every step needs every peer's partial product of that "
                             "step, so feature split is synchronous"),
               "timeout_s": HONOURED},  # the rest: _PACING_REST
    "codec": {"spec": _only("identity", why="feature split exchanges exact partial products each "
                            "step; compression is not supported")},
    "topology": {"kind": _only("full", why="every peer needs the partial sums of all others "
                               "(all-to-all)")},
}
_PACING_REST = ("max_staleness", "backup_k", "backup_catch_up", "dead_after_s",
                "heartbeat_interval_s", "interval_steps", "push_every_steps", "pull_every_steps",
                "final_sync", "stale_correction", "stale_window_rounds", "max_round_ahead")
RULES["pacing"].update({k: _default("feature split is synchronous: it waits for every partial "
                                    "product of a step (up to [pacing] timeout_s)")
                        for k in _PACING_REST})
_WHOLE_TABLE = {
    "codec": "feature split exchanges exact partial products each step; compression is not "
             "supported",
    "topology": "every peer needs the partial sums of all others (all-to-all)",
    "aggregation": _NO_AGG,
    "emulation": "link and compute emulation is applied by the gossip peer only",
    "membership": "feature split needs a fixed set of peers, one per feature block",
}


def _rule(table: str, key: str) -> KeyRule:
    rule = RULES.get(table, {}).get(key)
    if rule is not None:
        return rule
    return _default(_WHOLE_TABLE.get(table, "feature split has no use for it"))


def _problem(table: str, key: str, value: Any, default: Any, rule: KeyRule) -> str | None:
    if rule.allowed is None or value in rule.allowed or (not rule.allowed and value == default):
        return None
    if rule.allowed:
        want = " or ".join(repr(v).replace("'", '"') for v in rule.allowed)
        return f"[{table}] {key} = {value!r}: {rule.why}; set [{table}] {key} = {want}"
    return f"[{table}] {key} = {value!r}: {rule.why}; remove [{table}] {key}"


def _data_seed_problem(cfg: Any) -> str | None:
    if cfg.data.seed == 0 or cfg.data.is_synthetic:
        return None
    return (f"[data] seed = {cfg.data.seed}: on {cfg.data.dataset!r} it only seeds the sample "
            f"partition, and {_NO_SAMPLE_SPLIT}; remove [data] seed (use [run] seed for the "
            "SGD batches)")


def feature_split_problems(cfg: Any) -> list[str]:
    """Every key of ``cfg`` that feature split cannot honour, one line each (empty: all fine)."""
    problems = []
    for part_field in dataclasses.fields(cfg):
        part = getattr(cfg, part_field.name)
        if not dataclasses.is_dataclass(part):
            continue  # the experiment's name
        default = type(part)()
        for f in dataclasses.fields(part):
            line = _problem(part_field.name, f.name, getattr(part, f.name),
                            getattr(default, f.name), _rule(part_field.name, f.name))
            if line is not None:
                problems.append(line)
    seed_line = _data_seed_problem(cfg)
    return problems + ([seed_line] if seed_line else [])


def check_feature_split(cfg: Any) -> None:
    """Refuse, with one ConfigError naming each, the keys feature split cannot honour.

    Does nothing unless ``[run] mode = "feature_split"``. The decisions (:data:`RULES`):

    ============ ======================================================= =========================
    table        honoured (each changes what runs)                       refused unless
    ============ ======================================================= =========================
    [run]        n_peers (gossipml run; gossipml peer: the peer layout),  start_method,
                 deadline_s (gossipml run), seed (SGD batches),           comm_threads: default
                 torch_threads, mode
    [data]       dataset, path, dataset_args, synthetic_*,               partition, alpha,
                 seed (synthetic data only)                              shards_per_peer,
                                                                         sample_fraction,
                                                                         min_samples, stream:
                                                                         default
    [task]       model (logreg, svm, lstsq), lr, momentum (SGD phase),   optimizer = "sgd";
                 weight_decay (lam of the objective), batch_size,        device = "auto"/"cpu";
                 import_path                                             same_init = true; the
                                                                         rest (hidden, eval_*,
                                                                         lbfgs_*, lr_schedule,
                                                                         lr_*, warmup_steps,
                                                                         model_args, loss,
                                                                         metric): default
    [peer]       rounds (SGD steps), eval_every_rounds (round events     the rest (consensus,
                 every N rounds), startup_timeout_s (handshake)          keyframes, refresh,
                                                                         attacks, checkpoints):
                                                                         default
    [pacing]     timeout_s (wait for a partial product)                  mode = "sync"; the rest:
                                                                         default
    [transport]  every key (the peers' Transport); curve_keys_dir only   -
                 through gossipml peer (the threads runner refuses it)
    [codec]      -                                                       spec = "identity"; the
                                                                         rest: default
    [topology]   -                                                       kind = "full"; the rest:
                                                                         default
    [aggregation], [emulation], [membership]  -                          every key: default
    ============ ======================================================= =========================
    """
    if cfg.run.mode != "feature_split":
        return
    problems = feature_split_problems(cfg)
    if problems:
        raise ConfigError("[run] mode = \"feature_split\" cannot honour:\n  "
                          + "\n  ".join(problems))
