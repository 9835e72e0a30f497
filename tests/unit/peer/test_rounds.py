"""The round loop (``Rounds``, through ``Peer``) on an in-memory network: merges, schedule,
pulls, catch-up and the clock's one writer."""

from __future__ import annotations

from gossipml.peer.exchanged import exchanged_state

SYNC = {"pacing": {"mode": "sync", "timeout_s": 2.0}}


def _values(peer) -> set[float]:
    return {round(float(v), 6) for t in exchanged_state(peer.model).values() for v in t.flatten()}


def test_a_round_merges_the_neighbours_model_with_the_mixing_weights(memory_peers):
    p0, p1 = memory_peers([0.0, 1.0], SYNC)
    p1.outbound.publish(0, (0,))  # peer 1's round-0 model is delivered to peer 0 at once
    out = p0.exchange()
    assert out["merged"] == [1] and out["staleness"] == [0] and out["pace"] == "all_arrived"
    assert _values(p0) == {0.5}  # uniform ring of 2: 1/2 own + 1/2 neighbour
    assert p0.clock == 1 and p1.clock == 0
    assert p0.pushes_sent == 1 and p1.mailbox.at_round(0, 0) is not None  # and peer 1 got ours


def test_consensus_step_moves_part_of_the_way(memory_peers):
    p0, p1 = memory_peers([0.0, 1.0], {**SYNC, "peer": {"consensus_step": 0.5}})
    p1.outbound.publish(0, (0,))
    p0.exchange()
    assert _values(p0) == {0.25}  # x + 0.5 * (0.5 - x)


def test_steps_push_between_rounds_and_round_every_interval(memory_peers):
    cfg = {"pacing": {"mode": "async", "interval_steps": 3, "push_every_steps": 1}}
    p0, p1 = memory_peers([0.0, 1.0], cfg)
    assert p0.step() is None and p0.step() is None  # steps 1, 2: pushes, no round
    assert p0.pushes_sent == 2 and p0.clock == 0 and p0.local_steps == 2
    assert p1.mailbox.snapshot()[0][0].round == 0
    out = p0.step()  # step 3: a round (nothing from peer 1 to merge yet)
    assert out is not None and out["round"] == 0 and out["merged"] == [] and p0.clock == 1
    assert p0.pushes_sent == 3


def test_a_pull_is_answered_once_and_merged(memory_peers):
    cfg = {"pacing": {"mode": "async", "pull_every_steps": 1}}  # sync refuses pulls
    p0, p1 = memory_peers([0.0, 1.0], cfg)
    out = p0.step()  # interval 1: pull (peer 1 answers at once), push, then the round
    assert p0.pulls_sent == 1 and p1.pulls_answered == 1 and p0.pulls_answered == 0
    assert out["merged"] == [1] and _values(p0) == {0.5}
    assert p0.mailbox.snapshot()[0][1].info["pulled"] is True


def test_backup_peer_left_behind_catches_up_and_skips_rounds(memory_peers):
    cfg = {"topology": {"kind": "full"},
           "pacing": {"mode": "backup", "backup_k": 1, "backup_catch_up": True,
                      "interval_steps": 2}}
    p0, p1, p2 = memory_peers([0.0, 1.0, 1.0], cfg)
    for r in range(3):  # peers 1 and 2 ran rounds 0..2 without peer 0
        p1.outbound.publish(r, (0,))
        p2.outbound.publish(r, (0,))
    out = p0.step()  # mid-round: the first k finished round 0 (and 1, 2) without it
    assert out["aborted"] is True and out["pace"] == "caught_up"
    assert out["round"] == 0 and out["skipped_rounds"] == 2 and out["skipped_from"] == 1
    assert sorted(out["merged"]) == [1, 2] and out["staleness"] == [0, 0]
    assert p0.clock == 3 and p0.local_steps == 0  # the next round gets its full steps
    assert _values(p0) == {round(2 / 3, 6)}  # uniform over self and both neighbours
    assert p0.pushes_sent == 1  # the merged model went out as round 0's, for whoever waits


def test_resume_and_final_round_are_the_only_writers_the_loop_uses(memory_peers):
    cfg = {"pacing": {"mode": "async", "final_sync": True, "timeout_s": 0.2,
                      "interval_steps": 2}}
    (p0, p1) = memory_peers([0.0, 1.0], cfg)
    p0.resume(5)
    assert p0.clock == 5 and p0.local_steps == 10
    p0.resume(5, 11)
    assert p0.local_steps == 11
    p0.set_final_round(5)
    assert p0.final_round == 5
    out = p0.step()  # step 12: round 5, the last: synchronous (waits for peer 1, times out)
    assert out["round"] == 5 and out["pace"] == "timeout" and out["waited_for"] == [1]
    assert p0.clock == 6
    p0.clock = 2  # the old attribute write still works, through resume
    assert (p0.clock, p0.local_steps) == (2, 12)


def test_only_the_round_loop_writes_the_clock_and_the_step_count():
    import ast
    from pathlib import Path

    import gossipml

    writers = set()
    for path in Path(gossipml.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign))
                       else [])
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute) and sub.attr in ("clock", "local_steps"):
                        writers.add(path.name)
    assert writers == {"rounds.py"}, writers


def test_merged_names_only_the_senders_the_aggregator_kept(memory_peers):
    # Prepare: async with stale correction, three peers near float32's top; peer 1's round-0
    # model, corrected at round 1 (x_1 + own_now - own_0), overflows to inf, which the rule's
    # filter drops; peer 2's round-1 model needs no correction
    cfg = {"topology": {"kind": "full"},
           "pacing": {"mode": "async", "stale_correction": True}}
    p0, p1, p2 = memory_peers([2e38, 2e38, 2e38], cfg)
    p0.exchange(push=False)  # round 0: p0 records its own round-0 model, nothing to merge
    p1.outbound.publish(0, (0,))
    p2.outbound.publish(1, (0,))
    # Execute
    out = p0.exchange(push=False)
    # Assert: only peer 2 is reported (and its staleness), the model stays finite
    assert out["merged"] == [2] and out["staleness"] == [0] and out["corrected"] == []
    assert p0.aggregator.last_rejected[0][0] == 1
    assert all(bool(t.isfinite().all()) for t in exchanged_state(p0.model).values())
