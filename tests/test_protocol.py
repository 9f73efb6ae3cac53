"""The wire format: round trips, and hostile input rejected with ProtocolError only."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.errors import ProtocolError
from farm.protocol import MAX_BODY, PROTOCOL_VERSION, SHAPES, T, pack, unpack

HELLO = {"agent": "a", "host": "h", "pid": 1, "slots": 2, "prefetch": 3, "caps": ["maptiles"], "held": [],
         "version": "0.1.0"}


def test_round_trip_keeps_body_and_payloads():
    row = ["l", True, None, [["a.png", 3]], None, None, 0.1, False, True]
    msg = unpack(pack(T.RESULTS, {"results": [row]}, [b"abc"]))
    assert msg.type is T.RESULTS and msg.payloads == [b"abc"]
    assert msg.body["results"][0][3] == [["a.png", 3]]


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"\x01\x01"], "at least 2 frames"),
        ([b"\x01", b"\x80"], "bad header"),
        ([bytes((PROTOCOL_VERSION + 1, 1)), b"\x80"], "not supported"),
        ([bytes((PROTOCOL_VERSION, 250)), b"\x80"], "unknown message type"),
        ([bytes((PROTOCOL_VERSION, T.HELLO)), b"\xc1"], "undecodable"),
        ([bytes((PROTOCOL_VERSION, T.HELLO)), b"\x92\x01\x02"], "must be a map"),
        ([bytes((PROTOCOL_VERSION, T.HELLO)), b"\xd4\x05\x00"], "extension type"),
        ([bytes((PROTOCOL_VERSION, T.HELLO)), msgpack.packb({**HELLO, "slots": "2"})], "HELLO.slots: expected int"),
        ([bytes((PROTOCOL_VERSION, T.HELLO)), msgpack.packb({**HELLO, "slots": True})], "got a boolean"),
        ([bytes((PROTOCOL_VERSION, T.HELLO)), msgpack.packb({"agent": "a"})], "missing field"),
        ([bytes((PROTOCOL_VERSION, T.HELLO)), msgpack.packb({1: 2})], "undecodable"),
        ([bytes((PROTOCOL_VERSION, T.JOBS)), msgpack.packb({"jobs": [{"lease": 1}], "projects": {}})], "JOBS.jobs[0]"),
        ([bytes((PROTOCOL_VERSION, T.HELLO)), b"\x80" * (MAX_BODY + 1)], "exceeds"),
    ],
)
def test_bad_frames_raise_protocol_error(frames, error):
    with pytest.raises(ProtocolError, match=error.replace("[", r"\[")):
        unpack(frames)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=5))
def test_random_frames_never_raise_anything_but_protocol_error(frames):
    try:
        unpack(frames)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(SHAPES)), st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12))
def test_random_bodies_of_every_type_are_accepted_or_rejected_cleanly(kind, body):
    try:
        unpack([bytes((PROTOCOL_VERSION, kind)), msgpack.packb(body)])
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=199))
def test_mutated_valid_messages_are_accepted_or_rejected_cleanly(noise, position):
    frames = pack(T.HELLO, HELLO)
    body = bytearray(frames[1])
    body[position % len(body)] ^= noise[0] or 1
    try:
        unpack([frames[0], bytes(body) + noise[1:]])
    except ProtocolError:
        pass


def test_a_shape_made_later_is_checked_as_itself_not_as_one_freed_before():
    """`check_shape` caches each spec's checker by the spec's id: a spec freed after its check left
    its id (and checker) to the next spec made, which was then checked as the freed one."""
    from farm.errors import ProtocolError
    from farm.protocol import check_shape

    for n in range(200):
        if n % 2:
            check_shape({"size": 7}, {"size": int}, "int")  # a fresh spec each turn, freed after it
            with pytest.raises(ProtocolError, match="size"):
                check_shape({"size": "seven"}, {"size": int}, "int")
        else:
            check_shape({"name": "a"}, {"name": str}, "str")
            with pytest.raises(ProtocolError, match="name"):
                check_shape({"name": 7}, {"name": str}, "str")
