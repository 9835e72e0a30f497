"""Issue #16: every key of every ``[table]`` has a test that fails if the key is ignored (two
values, two observably different behaviours) or removed.

``AUDIT`` maps ``table.key`` to that test (``path::function``), or to ``"pending: <what>"`` for a
key whose fix another change is landing. The walker reads the fields of every config dataclass
(``gossipml.config._PARTS``) and fails, naming them, on a key with no entry, an entry for a key
that no longer exists, or an entry naming a test function that is not there; pending entries are
reported (a warning listing them), not failed.
"""

from __future__ import annotations

import ast
import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from gossipml.config import _PARTS

ROOT = Path(__file__).resolve().parents[2]
PENDING = "pending:"

_CODEC = "tests/unit/audit/test_codec_keys.py::"
_POLICY = "tests/unit/audit/test_policy_keys.py::"
_AGG = "tests/unit/audit/test_aggregation_keys.py::"
_DATA = "tests/unit/audit/test_data_task_keys.py::"
_PEER = "tests/unit/audit/test_peer_keys.py::"
_TRANSPORT = "tests/unit/audit/test_transport_keys.py::"
_RUN = "tests/unit/audit/test_run_keys.py::"
_EMU = "tests/unit/audit/test_emulation_membership_keys.py::"
_ADMM = "tests/unit/audit/test_admm_keys.py::"

AUDIT: dict[str, str] = {
    "codec.spec": _CODEC + "test_spec_chooses_the_codec",
    "codec.name": _CODEC + "test_name_chooses_the_codec",
    "codec.block": _CODEC + "test_block_sets_the_quantization_blocks",
    "codec.stochastic": _CODEC + "test_stochastic_rounds_at_random",
    "codec.seed": _CODEC + "test_seed_draws_other_coordinates",
    "codec.fraction": _CODEC + "test_fraction_sets_how_many_are_sent",
    "codec.count": _CODEC + "test_count_sets_how_many_are_sent",
    "codec.threshold": _CODEC + "test_threshold_sets_which_are_sent",
    "codec.rank": _CODEC + "test_rank_sets_the_factor_width",
    "codec.fallback": _CODEC + "test_fallback_encodes_what_lowrank_cannot",
    "codec.min_gain": _CODEC + "test_min_gain_decides_between_factors_and_fallback",
    "codec.values": _CODEC + "test_values_encodes_the_chosen_entries",
    "codec.error_feedback":
        _CODEC + "test_error_feedback_carries_the_residual_into_the_next_message",
    "codec.min_numel": _CODEC + "test_min_numel_sends_small_tensors_with_the_small_codec",
    "codec.small": _CODEC + "test_small_is_the_codec_of_small_tensors",
    "codec.content": _CODEC + "test_content_delta_sends_changes_against_a_kept_reference",
    "codec.allow_biased_params": "tests/unit/codecs/test_config.py::"
                                 "test_sparse_lowrank_and_sign_over_parameters_are_refused",
    "topology.kind": _POLICY + "test_topology_kind_chooses_the_graph",
    "topology.k": _POLICY + "test_topology_k_sets_the_degree",
    "topology.path": _POLICY + "test_topology_path_is_the_edge_list_read",
    "topology.weights": "tests/integration/test_settings_runs.py::"
                        "test_a_star_merges_with_metropolis_hastings_weights_exactly",
    "topology.seed": _POLICY + "test_topology_seed_draws_another_random_graph",
    "pacing.mode": _POLICY + "test_pacing_mode_chooses_whether_to_wait",
    "pacing.timeout_s": _POLICY + "test_pacing_timeout_s_bounds_the_wait",
    "pacing.max_staleness": _POLICY + "test_pacing_max_staleness_bounds_the_lag",
    "pacing.max_round_ahead": "tests/unit/policies/test_window.py::"
                              "test_rounds_ahead_is_the_pace_bound_plus_slack_or_the_configured_one",
    "pacing.backup_k": _POLICY + "test_pacing_backup_k_is_how_many_to_wait_for",
    "pacing.backup_catch_up": _POLICY + "test_pacing_backup_catch_up_jumps_to_the_others_round",
    "pacing.dead_after_s": _POLICY + "test_pacing_dead_after_s_stops_waiting_for_the_silent",
    "pacing.heartbeat_interval_s": _POLICY + "test_pacing_heartbeat_interval_s_sets_when_to_beat",
    "pacing.interval_steps": _POLICY + "test_pacing_interval_steps_is_the_steps_of_a_round",
    "pacing.push_every_steps": _POLICY + "test_pacing_push_every_steps_sets_when_to_push",
    "pacing.pull_every_steps": _POLICY + "test_pacing_pull_every_steps_sets_when_to_pull",
    "pacing.final_sync": _POLICY + "test_pacing_final_sync_waits_in_the_last_round",
    "pacing.stale_correction": _POLICY + "test_pacing_stale_correction_corrects_a_stale_merge",
    "pacing.stale_window_rounds": _POLICY + "test_pacing_stale_window_rounds_is_the_history_kept",
    "aggregation.rule": _AGG + "test_rule_chooses_how_models_combine",
    "aggregation.weights": _AGG + "test_weights_chooses_the_weight_scheme",
    "aggregation.age_exponent": _AGG + "test_age_exponent_discounts_old_models",
    "aggregation.partial_names": _AGG + "test_partial_names_choose_the_tensors_averaged",
    "aggregation.partial_fraction": _AGG + "test_partial_fraction_sets_the_coordinates_averaged",
    "aggregation.rho": _ADMM + "test_rho_sets_the_pull_toward_the_neighbours",
    "aggregation.asynchronous": _ADMM + "test_asynchronous_pairs_duals_by_version",
    "aggregation.prox_steps": _ADMM + "test_prox_steps_sets_how_far_the_local_step_goes",
    "aggregation.prox_lr": _ADMM + "test_prox_lr_sets_the_local_step_size",
    "aggregation.prox_batch_size": _ADMM + "test_prox_batch_size_sets_the_data_of_each_local_step",
    "aggregation.trim_fraction": _AGG + "test_trim_fraction_sets_how_much_is_trimmed",
    "aggregation.clip_radius": _AGG + "test_clip_radius_bounds_each_pull",
    "aggregation.max_models": _AGG + "test_max_models_bounds_the_ensemble",
    "aggregation.temperature": _AGG + "test_temperature_softens_the_distilled_targets",
    "aggregation.distill_steps": _AGG + "test_distill_steps_is_how_long_the_student_trains",
    "aggregation.distill_lr": _AGG + "test_distill_lr_is_the_students_step_size",
    "aggregation.distill_batch_size": _AGG + "test_distill_batch_size_is_the_students_batch",
    "aggregation.distill_optimizer": _AGG + "test_distill_optimizer_is_the_students_optimizer",
    "aggregation.relabel_fraction":
        _AGG + "test_relabel_fraction_is_the_share_of_inputs_relabelled",
    "aggregation.distill_init": _AGG + "test_distill_init_is_where_the_student_starts",
    "aggregation.public_samples": "tests/integration/test_aggregation_runs.py::"
                                  "test_distill_uses_a_configured_unlabeled_public_set",
    "aggregation.seed": _AGG + "test_seed_draws_another_partial_mask",
    "data.dataset_args": "tests/unit/audit/test_plugin_keys.py::"
                         "test_dataset_args_reach_the_dataset_callable",
    "data.dataset": _DATA + "test_dataset_chooses_the_data",
    "data.path": _DATA + "test_path_is_the_folder_read",
    "data.partition": _DATA + "test_partition_chooses_the_split",
    "data.alpha": _DATA + "test_alpha_sets_the_label_skew",
    "data.shards_per_peer": _DATA + "test_shards_per_peer_is_the_classes_per_peer",
    "data.sample_fraction": _DATA + "test_sample_fraction_is_each_peers_sample_size",
    "data.min_samples": _DATA + "test_min_samples_is_the_smallest_part",
    "data.seed": _DATA + "test_seed_draws_another_split",
    "data.stream": _DATA + "test_stream_trains_on_fresh_batches",
    **{f"data.{k}": _DATA + "test_synthetic_keys_shape_the_distribution"
       for k in ("synthetic_features", "synthetic_classes", "synthetic_noise",
                 "synthetic_train_size", "synthetic_test_size")},
    "task.import_path": "tests/unit/audit/test_plugin_keys.py::"
                        "test_import_path_chooses_the_folder_the_module_comes_from",
    "task.model_args": "tests/unit/tasks/test_plugin.py::"
                       "test_the_model_gets_its_args_and_the_dataset_shape",
    "task.loss": "tests/unit/tasks/test_plugin.py::test_loss_and_metric_replace_the_defaults",
    "task.metric": "tests/unit/tasks/test_plugin.py::test_loss_and_metric_replace_the_defaults",
    "task.model": _DATA + "test_model_chooses_the_architecture",
    "task.optimizer": _DATA + "test_optimizer_chooses_the_update",
    "task.lr": _DATA + "test_lr_sets_the_step_size",
    "task.momentum": _DATA + "test_momentum_carries_past_steps",
    "task.weight_decay": _DATA + "test_weight_decay_shrinks_the_weights",
    "task.batch_size": _DATA + "test_batch_size_is_the_items_per_step",
    "task.device": _DATA + "test_device_places_the_model",
    "task.eval_batch_size": _DATA + "test_eval_batch_size_is_the_evaluation_batch",
    "task.eval_max_samples": _DATA + "test_eval_max_samples_bounds_the_test_set",
    "task.hidden": _DATA + "test_hidden_is_the_mlp_width",
    "task.same_init": _DATA + "test_same_init_starts_every_peer_from_the_same_weights",
    "task.lbfgs_max_iter": _DATA + "test_lbfgs_max_iter_is_the_inner_iterations",
    "task.lbfgs_history": _DATA + "test_lbfgs_history_is_the_curvature_memory",
    "task.lr_schedule": _DATA + "test_lr_schedule_changes_the_rate_over_the_run",
    "task.lr_min_factor": _DATA + "test_lr_min_factor_is_where_the_decay_ends",
    "task.lr_milestones": _DATA + "test_lr_milestones_are_where_the_steps_drop",
    "task.lr_gamma": _DATA + "test_lr_gamma_is_the_drop_at_a_milestone",
    "task.warmup_steps": _DATA + "test_warmup_steps_ramp_the_rate_up",
    "task.lr_decay_steps": _DATA + "test_lr_decay_steps_is_the_span_of_the_decay",
    "peer.rounds": _RUN + "test_rounds_is_how_many_rounds_each_peer_runs",
    "peer.eval_every_rounds": _RUN + "test_eval_every_rounds_is_when_accuracy_is_measured",
    "peer.startup_timeout_s": _PEER + "test_startup_timeout_s_bounds_the_wait_for_neighbours",
    "peer.consensus_step": "tests/unit/peer/test_rounds.py::"
                           "test_consensus_step_moves_part_of_the_way",
    "peer.keyframe_every_rounds": _PEER + "test_keyframe_every_rounds_resends_the_reference",
    "peer.keyframe_codec": _PEER + "test_keyframe_codec_is_how_keyframes_travel",
    "peer.refresh_every_rounds": _PEER + "test_refresh_every_rounds_sends_dense_deltas",
    "peer.refresh_codec": _PEER + "test_refresh_codec_is_how_refreshes_travel",
    "peer.attack": _PEER + "test_attack_is_what_an_attacker_sends",
    "peer.attackers": _PEER + "test_attackers_are_the_peers_that_attack",
    "peer.checkpoint_dir": _RUN + "test_checkpoint_dir_is_where_checkpoints_go",
    "peer.checkpoint_every_rounds":
        _RUN + "test_checkpoint_every_rounds_is_how_often_a_checkpoint_is_written",
    "transport.max_connections": "tests/unit/comm/test_budget.py::"
                                 "test_connections_past_the_limit_are_cut",
    "transport.max_message_bytes": _TRANSPORT + "test_max_message_bytes_is_the_routers_limit",
    "transport.send_hwm": _TRANSPORT + "test_send_hwm_is_each_dealers_queue",
    "transport.recv_hwm": _TRANSPORT + "test_recv_hwm_is_the_routers_queue",
    "transport.linger_s": _TRANSPORT + "test_linger_s_is_each_dealers_linger",
    "transport.send_timeout_s": _TRANSPORT + "test_send_timeout_s_is_each_dealers_send_timeout",
    "transport.poll_interval_s":
        _TRANSPORT + "test_poll_interval_s_is_how_often_the_idle_thread_wakes",
    "transport.shm": _TRANSPORT + "test_shm_turns_the_same_host_path_on",
    "transport.shm_min_bytes": _TRANSPORT + "test_shm_min_bytes_is_the_smallest_message_offloaded",
    "transport.curve_keys_dir": "tests/integration/test_curve_peers.py::"
                                "test_curve_peers_average_and_strangers_are_refused",
    "run.n_peers": _RUN + "test_n_peers_is_how_many_peers_run",
    "run.deadline_s": _RUN + "test_deadline_s_stops_a_run_that_overruns",
    "run.seed": _RUN + "test_seed_changes_the_run",
    "run.start_method": "tests/integration/test_startup.py::"
                        "test_fork_and_spawn_run_the_same_experiment_to_the_same_accuracy",
    "run.torch_threads": _RUN + "test_torch_threads_is_the_runs_torch_threads",
    "run.mode": _RUN + "test_mode_threads_runs_every_peer_in_this_process",
    "run.comm_threads": _RUN + "test_comm_threads_is_how_many_communication_threads_the_peers_share",
    "emulation.delay_s": _EMU + "test_delay_s_delays_every_message",
    "emulation.jitter_s": _EMU + "test_jitter_s_spreads_the_delays",
    "emulation.drop_prob": _EMU + "test_drop_prob_drops_messages",
    "emulation.seed": _EMU + "test_seed_draws_other_link_decisions",
    "emulation.links": _EMU + "test_links_override_one_link",
    "emulation.compute_slowdown": _EMU + "test_compute_slowdown_slows_a_peers_steps",
    "emulation.straggler_factor": _EMU + "test_straggler_factor_slows_one_peer_per_round",
    "emulation.straggler_every_rounds":
        _EMU + "test_straggler_every_rounds_is_how_long_one_straggles",
    "emulation.straggler_order": _EMU + "test_straggler_order_cycle_visits_every_peer",
    "emulation.step_time_s": _EMU + "test_step_time_s_is_the_emulated_step",
    "membership.max_new_per_shuffle": _EMU + "test_max_new_per_shuffle_bounds_the_ids_one_source_introduces",
    "membership.max_probes": _EMU + "test_max_probes_bounds_the_probes_in_flight",
    "membership.probe_timeout_s": _EMU + "test_probe_timeout_s_drops_a_candidate_that_never_answers",
    "membership.enabled": _EMU + "test_enabled_takes_neighbours_from_the_live_view",
    "membership.seeds": _EMU + "test_seeds_are_whom_an_empty_view_shuffles_with",
    "membership.view_size": _EMU + "test_view_size_bounds_the_live_view",
    "membership.shuffle_size": _EMU + "test_shuffle_size_is_the_entries_a_shuffle_carries",
    "membership.shuffle_interval_s": _EMU + "test_shuffle_interval_s_spaces_the_shuffles",
    "membership.dead_after_s": _EMU + "test_dead_after_s_drops_the_silent",
    "membership.fanout": _EMU + "test_fanout_is_how_many_a_round_pushes_to",
}


def config_keys(parts: Mapping[str, type] = _PARTS) -> set[str]:
    """``table.key`` for every field of every table's config dataclass."""
    return {f"{table}.{f.name}" for table, cls in parts.items() for f in dataclasses.fields(cls)}


@lru_cache(maxsize=None)
def _test_functions(path: Path) -> frozenset[str]:
    """Names of the module-level test functions of a test file (collected with ``ast``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return frozenset(n.name for n in tree.body if isinstance(n, ast.FunctionDef)
                     and n.name.startswith("test_"))


def audit_problems(audit: Mapping[str, str], keys: set[str], root: Path = ROOT) -> list[str]:
    """What is wrong with ``audit`` for ``keys``: missing keys, entries for removed keys, entries
    naming a test that does not exist. Empty when the audit is complete. A pending entry may name
    a key that is not there yet (it lands with another change)."""
    problems = [f"{k}: no test listed in AUDIT (add one that fails if the key is ignored)"
                for k in sorted(keys - set(audit))]
    problems += [f"{k}: listed in AUDIT but no config has this key any more (remove the entry)"
                 for k in sorted(set(audit) - keys) if not audit[k].startswith(PENDING)]
    for key, target in sorted(audit.items()):
        if target.startswith(PENDING):
            continue
        path, _, func = target.partition("::")
        file = root / path
        if not func or not file.is_file():
            problems.append(f"{key}: {target!r} is not an existing 'path::test_function'")
        elif func not in _test_functions(file):
            problems.append(f"{key}: {path} has no test function {func!r}")
    return problems


def test_every_config_key_has_a_test_that_shows_its_effect():
    problems = audit_problems(AUDIT, config_keys())
    assert not problems, "key audit (issue #16):\n" + "\n".join(problems)
    pending = sorted(k for k, v in AUDIT.items() if v.startswith(PENDING))
    assert not pending, "key audit: keys still pending (write the test of each): " + ", ".join(
        f"{k} ({AUDIT[k][len(PENDING):].strip()})" for k in pending)


def test_pending_entries_say_what_they_wait_for():
    vague = [k for k, v in AUDIT.items() if v.startswith(PENDING) and len(v) < len(PENDING) + 10]
    assert not vague, f"say what each pending key waits for: {vague}"


def test_the_walker_names_missing_removed_and_unknown_tests(tmp_path):
    # Prepare: a test file with one test, tables with keys a.x and a.y, and an audit that misses
    # a.y, lists a removed b.z, names a test that is not there, and leaves two keys pending (one
    # of them not there yet)
    (tmp_path / "t.py").write_text("def test_x():\n    pass\n\ndef helper():\n    pass\n")

    @dataclasses.dataclass
    class A:
        x: int = 0
        y: int = 0
        w: int = 0
        v: int = 0

    audit = {"a.x": "t.py::test_x", "a.w": "t.py::helper", "a.v": "pending: someone",
             "b.z": "t.py::test_x", "b.u": "pending: lands with another change"}
    # Execute
    problems = audit_problems(audit, config_keys({"a": A}), tmp_path)
    # Assert: one message each, naming the key
    assert len(problems) == 3
    assert problems[0].startswith("a.y: no test") and problems[1].startswith("b.z: listed")
    assert problems[2].startswith("a.w: t.py has no test function 'helper'")
