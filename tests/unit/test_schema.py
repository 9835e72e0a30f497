"""The info schema of every message kind, checked through the wire: good infos pass normalised,
every field replaced by a wrong type / out-of-range / oversize value is refused with ``bad_info``,
and random info maps only ever raise WireError."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipml.schema import (MAX_HEARS, MAX_INFO_BYTES, MAX_NUM_SAMPLES, MAX_VIEW_ENTRIES, SCHEMAS,
                             SchemaError, check_info, check_meta)
from gossipml.wire import REASONS, Message, WireError, pack, unpack

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKEN = {"name": "gml-1-2-0123abcd", "gen": 4}
ENTRY = [7, "tcp://10.0.0.2:5555", 0.25]
#: kind -> a good value for every key of its schema
GOOD = {
    "model": {"num_samples": 600, "pulled": True, "seq": 12, "keyframe": False, "refresh": True},
    "heartbeat": {"done": False, "hears": [3, 1, 3], "address": "tcp://[::1]:6000"},
    "pull": {},
    "view": {"entries": [ENTRY, [8, "ipc:///tmp/p8", 0]], "reply": True,
             "address": "inproc://peer-3", "nonce": 2**62 - 1, "echo": 0},
    "ack": {"shm_release": TOKEN, "done": True, "shm_probe": "gml-probe-0123456789abcdef",
            "shm_probe_answer": bytes(range(16))},
    "hello": {"heard_all": True, "x_sq_norm": 4.0},
    "partial": {"w_sq": 0.5, "g_sq": math.inf, "dot": -1.5},
}
GOOD["delta"] = GOOD["model"]
NAN = float("nan")
#: kind -> key -> values that must be refused
BAD = {
    "model": {"num_samples": ["x", NAN, 1.5, -1, True, MAX_NUM_SAMPLES + 1, 2**62, None],
              "pulled": [1, "yes", None], "seq": [-1, 2**62, 1.0, "3"],
              "keyframe": [0, [], {}], "refresh": [1]},
    "heartbeat": {"hears": [5, "1,2", [1, "2"], [-1], [2**31], [True], [0] * (MAX_HEARS + 1),
                            {"a": 1}],
                  "done": [0, "false"],
                  "address": [3, "", "tcp://h", "tcp://h:0", "tcp://h:70000", "tcp://a b:1",
                              "http://h:1", "ipc://", "tcp://" + "h" * 300 + ":1",
                              "inproc://a\nb"]},
    "view": {"entries": [5, [[1, "tcp://h:1"]], [[1, "tcp://h:1", -1.0]],
                         [[1, "tcp://h:1", NAN]], [[1, "nope", 0.0]], [["1", "tcp://h:1", 0]],
                         [ENTRY] * (MAX_VIEW_ENTRIES + 1), [[2**31, "tcp://h:1", 0]]],
             "reply": [1], "address": ["x"], "nonce": [-1, 2**62, 1.5], "echo": ["1", None]},
    "ack": {"shm_release": [None, "gml-1-2-0123abcd", ["gml-1-2-0123abcd", 4], {"name": "n"},
                            {"name": "n", "gen": -1}, {"name": "n", "gen": 1, "x": 2},
                            {"name": "../etc", "gen": 1}, {"name": "a" * 65, "gen": 1},
                            {"name": 3, "gen": 1}, {"name": "n", "gen": 2**63}],
            "done": [None],
            "shm_probe": [None, "gml-probe-xyz", "../gml-probe-0123456789abcdef", 7],
            "shm_probe_answer": [b"short", "0123456789abcdef", bytes(17)]},
    "hello": {"heard_all": [1], "x_sq_norm": [-1.0, NAN, math.inf, "2"]},
    "partial": {"w_sq": [-0.1, math.inf, NAN], "g_sq": [-math.inf, NAN, -1], "dot": [math.inf,
                                                                                       NAN, "0"]},
}


def frames_of(kind: str, info: dict) -> list[bytes]:
    """A received message of ``kind`` with ``info``, packed without the sender's checks."""
    import msgpack

    head = {"v": 1, "kind": kind, "sender": 1, "round": 2, "info": info, "tensors": []}
    return [msgpack.packb(head, use_bin_type=True)]


def refused_info(kind: str, info: dict) -> WireError:
    """unpack refuses ``info`` with bad_info, and pack refuses it at the sender too."""
    with pytest.raises(WireError) as received:
        unpack(frames_of(kind, info))
    assert received.value.reason == "bad_info", str(received.value)
    with pytest.raises(WireError) as sent:
        pack(Message(kind, 1, 2, info=info))
    assert sent.value.reason == "bad_info"
    return received.value


def test_every_kind_has_a_schema_and_every_key_a_good_value():
    assert set(GOOD) == set(SCHEMAS)
    for kind, schema in SCHEMAS.items():
        assert set(GOOD[kind]) == set(schema), kind


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_good_info_passes_normalised(kind):
    msg = unpack(pack(Message(kind, 1, 2, info=GOOD[kind])))
    assert msg.info == check_info(kind, GOOD[kind])
    assert unpack(frames_of(kind, {})).info == {}  # every key is optional
    if kind == "heartbeat":
        assert msg.info["hears"] == (1, 3)
    if kind == "partial":
        assert msg.info["g_sq"] == math.inf and isinstance(msg.info["w_sq"], float)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_field_is_refused_naming_it(kind):
    for key, values in BAD[kind].items():
        for value in values:
            err = refused_info(kind, {**GOOD[kind], key: value})
            # (a list over MAX_INFO_ITEMS is already refused while decoding)
            assert f"info.{key}" in str(err) or "max_array_len" in str(err), (key, value, err)


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_unknown_keys_are_refused(kind):
    err = refused_info(kind, {**GOOD[kind], "weight": 1.0})
    assert "weight" in str(err) and kind in str(err)
    refused_info(kind, {**GOOD[kind], "": None})


def test_oversize_info_is_refused_before_decoding():
    big = {"address": "x" * MAX_INFO_BYTES}
    with pytest.raises(WireError) as e:
        unpack(frames_of("heartbeat", big))
    assert e.value.reason == "bad_info" and "bytes" in str(e.value)
    with pytest.raises(WireError) as e:
        unpack(frames_of("heartbeat", {f"k{i}": 1 for i in range(17)}))
    assert e.value.reason == "bad_info"


def test_the_issue_15_infos():
    """The attacker's inputs of issue #15, each refused at the wire now."""
    refused_info("heartbeat", {"hears": 7})
    refused_info("model", {"num_samples": "x"})
    refused_info("model", {"num_samples": NAN})
    refused_info("model", {"num_samples": 2**62})
    refused_info("ack", {"shm_release": {"name": ["x"], "gen": 1}})
    refused_info("view", {"entries": [[1, 5, 0.0]]})


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                    st.text(max_size=12), st.binary(max_size=12))
values = st.recursive(scalars, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)), max_leaves=10)


@st.composite
def infos(draw) -> tuple[str, dict]:
    """A kind and an info map mixing its own keys (good or random values) with random keys."""
    kind = draw(st.sampled_from(sorted(SCHEMAS)))
    keys = sorted(SCHEMAS[kind]) + ["x", "", "weight"]
    info = {}
    for key in draw(st.lists(st.sampled_from(keys), max_size=5, unique=True)):
        good = GOOD[kind].get(key)
        info[key] = draw(st.one_of(st.just(good), values)) if good is not None else draw(values)
    return kind, info


@SETTINGS
@given(infos())
def test_random_infos_only_raise_wire_error(kind_info):
    kind, info = kind_info
    try:
        msg = unpack(frames_of(kind, info))
    except WireError as exc:
        assert exc.reason in REASONS
    else:
        assert set(msg.info) <= set(SCHEMAS[kind])
        assert msg.info == check_info(kind, msg.info)  # normalising is idempotent


def test_check_meta_bounds():
    assert check_meta({"block": 512, "values": "raw", "v.block": 64}) == (
        {"block": 512, "values": "raw", "v.block": 64}, 7)
    for bad in [[1], {"a": {"b": 1}}, {"a": [[1]]}, {"a": [0] * 33}, {"": 1}, {1: 2},
                {str(i): 0 for i in range(33)}, {"a": "x" * 257}, {"a": object()}]:
        with pytest.raises(SchemaError):
            check_meta(bad)
