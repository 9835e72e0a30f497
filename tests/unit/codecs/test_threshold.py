"""The ``threshold`` significance filter: stateless, and within the threshold once its changes are
added to a copy (CHOCO's ``x_hat`` is its last-sent copy; it keeps none of its own)."""

from __future__ import annotations

import pytest
import torch

from gossipml.codecs import (DeltaReceiver, DeltaSender, ErrorFeedback, ThresholdCodec,
                             build_codec, decode_payload, filters_changes, parse_spec)


def test_filter_sends_entries_past_the_threshold_and_keeps_no_state():
    # Prepare
    codec = build_codec("threshold:0.5")
    x = torch.tensor([2.0, 1.0, 1.0, 0.5, -0.6, 0.0, float("nan")])
    # Execute: the same tensor twice, the state of the first call handed to the second
    first, state = codec.encode(x, None)
    second, _ = codec.encode(x, state)
    # Assert: both send the same entries (no last-sent copy inside), NaN included; decode gives
    # them at their positions and zeros elsewhere
    assert first.meta["k"] == second.meta["k"] == 5
    out = decode_payload(second)
    assert torch.equal(out[:6], torch.tensor([2.0, 1.0, 1.0, 0.0, -0.6, 0.0]))
    assert torch.isnan(out[6])


def test_threshold_over_choco_reference_does_not_double_count():
    # Prepare: issue #16's +delta case: a drifting model, thr 0.05, 30 rounds; the old codec kept
    # its own last-sent copy on top of x_hat and its receiver drifted to 0.37 away
    thr = 0.05
    sender, receiver = DeltaSender(build_codec(f"threshold:{thr}")), DeltaReceiver()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, generator=gen)
    sent_counts = []
    for r in range(30):
        x = x + 0.1 * 0.9**r * torch.randn(500, generator=gen)
        # Execute
        items = sender.encode({"w": x})
        copy = receiver.apply(7, items)["w"]
        # Assert: the copy is the sender's x_hat bit for bit and within the threshold of x
        assert torch.equal(copy, sender.reference["w"]), r
        assert float((copy - x).abs().max()) <= thr + 1e-6, r
        sent_counts.append(items[0][1].meta["k"])
    # fewer entries pass as the steps shrink
    assert sum(sent_counts[-5:]) < 0.3 * sum(sent_counts[1:6]), sent_counts


def test_unsent_entries_keep_their_value_until_they_pass():
    # Prepare: entries 0..9 jump, 10..19 creep by 0.03 a round under a 0.1 threshold
    sender, receiver = DeltaSender(build_codec("threshold:0.1")), DeltaReceiver()
    x = torch.zeros(20)
    for r in range(5):
        x = x.clone()
        x[:10] += 1.0
        x[10:] += 0.03
        # Execute
        items = sender.encode({"x": x})
        copy = receiver.apply(0, items)["x"]
        # Assert: jumps arrive at once; the creep arrives every 4th round, when it passes 0.1
        assert torch.equal(copy[:10], x[:10])
        sent_creep = r == 3
        assert items[0][1].meta["k"] == (20 if sent_creep else 10), r
        assert float((copy - x).abs().max()) <= 0.1 + 1e-6


def test_which_codecs_filter_changes():
    assert filters_changes(build_codec("threshold:0.1"))
    assert filters_changes(build_codec("threshold:0.1>q8"))
    assert filters_changes(build_codec("threshold:0.1+bysize:64"))
    assert not filters_changes(build_codec("topk:0.1"))
    assert not filters_changes(build_codec("q8+ef"))
    with pytest.raises(ValueError, match="drop '\\+ef'"):
        filters_changes(ErrorFeedback(ThresholdCodec(0.1)))
    with pytest.raises(ValueError, match="drop '\\+ef'"):
        parse_spec("threshold:0.1+ef")
