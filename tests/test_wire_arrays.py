"""Protocol 2: JOBS carries each job, RESULTS each result, as a fixed-order array. A hostile peer's
array of the wrong length or with a field of the wrong type is refused as a bad message, saying
which field of which item is wrong (as protocol 1's maps were); a peer of protocol 1 is refused at
its first message, before anything in it is read. A real controller and a real DEALER socket."""

from __future__ import annotations

import logging

import msgpack
import pytest
import zmq
from conftest import wait_for
from peer_helpers import peer_run
from wire_helpers import result_row

from farm.errors import ProtocolError
from farm.protocol import PROTOCOL_VERSION, JobResult, T, pack, unpack

GOOD_RESULT = ["l", True, None, [], None, None, 0.5, False, True]
GOOD_JOB = ["l", "k", "p", {}, {}, 60.0]


def _frames(kind: T, body: dict) -> list[bytes]:
    return [bytes((PROTOCOL_VERSION, kind)), msgpack.packb(body, use_bin_type=True)]


def _result(**changed) -> list:
    """`GOOD_RESULT` with fields replaced by position name."""
    row = list(GOOD_RESULT)
    for name, value in changed.items():
        row[JobResult.__slots__.index(name)] = value
    return row


@pytest.mark.parametrize(("row", "error"), [
    (GOOD_RESULT[:-1], r"RESULTS\.results\[1\]: expected an array of 9 \(lease, ok, result, files, error, "
                       r"log, duration, requeue, retry\), got 8 items"),
    ([*GOOD_RESULT, None], r"RESULTS\.results\[1\]: expected an array of 9 .*got 10 items"),
    ({"lease": "l", "ok": True, "result": None, "files": [], "duration": 0.5},  # protocol 1's map
     r"RESULTS\.results\[1\]: expected an array of 9 .*got dict"),
    ("l", r"RESULTS\.results\[1\]: expected an array of 9 .*got str"),
    (_result(lease=7), r"RESULTS\.results\[1\]\.lease: expected str, got int"),
    (_result(ok="yes"), r"RESULTS\.results\[1\]\.ok: expected bool, got str"),
    (_result(files={}), r"RESULTS\.results\[1\]\.files: expected a list, got dict"),
    (_result(files=[["a.bin", 1, b""], "b.bin"]),
     r"RESULTS\.results\[1\]\.files\[1\]: expected a list, got str"),
    (_result(error=1), r"RESULTS\.results\[1\]\.error: expected str or NoneType, got int"),
    (_result(log=b"tail"), r"RESULTS\.results\[1\]\.log: expected str or NoneType, got bytes"),
    (_result(duration=True), r"RESULTS\.results\[1\]\.duration: expected int or float, got a boolean"),
    (_result(duration="1"), r"RESULTS\.results\[1\]\.duration: expected int or float, got str"),
    (_result(requeue=None), r"RESULTS\.results\[1\]\.requeue: expected bool, got NoneType"),
    (_result(retry=0), r"RESULTS\.results\[1\]\.retry: expected bool, got int"),
])
def test_a_bad_result_array_is_refused_naming_its_field(row, error):
    with pytest.raises(ProtocolError, match=error):
        unpack(_frames(T.RESULTS, {"results": [GOOD_RESULT, row]}))


@pytest.mark.parametrize(("row", "error"), [
    (GOOD_JOB[:-1], r"JOBS\.jobs\[1\]: expected an array of 6 \(lease, key, project, params, deps, "
                    r"timeout\), got 5 items"),
    ([*GOOD_JOB, 1], r"JOBS\.jobs\[1\]: expected an array of 6 .*got 7 items"),
    ({"lease": "l", "key": "k", "project": "p", "params": {}, "deps": {}, "timeout": 60.0},  # protocol 1
     r"JOBS\.jobs\[1\]: expected an array of 6 .*got dict"),
    (["l", 3, "p", {}, {}, 60.0], r"JOBS\.jobs\[1\]\.key: expected str, got int"),
    (["l", "k", None, {}, {}, 60.0], r"JOBS\.jobs\[1\]\.project: expected str, got NoneType"),
    (["l", "k", "p", {}, {}, True], r"JOBS\.jobs\[1\]\.timeout: expected int or float, got a boolean"),
])
def test_a_bad_job_array_is_refused_naming_its_field(row, error):
    with pytest.raises(ProtocolError, match=error):
        unpack(_frames(T.JOBS, {"jobs": [GOOD_JOB, row], "projects": {}}))


def test_good_arrays_come_out_as_they_went_in():
    results = unpack(_frames(T.RESULTS, {"results": [GOOD_RESULT, _result(log="tail", error="e", ok=False)]}))
    assert [JobResult.from_wire(r) for r in results.body["results"]] == [
        JobResult("l", True, duration=0.5), JobResult("l", False, error="e", log="tail", duration=0.5)]
    assert unpack(_frames(T.JOBS, {"jobs": [GOOD_JOB], "projects": {}})).body["jobs"] == [GOOD_JOB]


def test_a_peer_of_protocol_1_is_refused_at_its_hello(tmp_path, caplog):
    """Its HELLO is refused as a bad message saying both versions; it is no agent here. A peer on the
    same socket speaking protocol 2 is welcomed."""
    caplog.set_level(logging.WARNING)
    with peer_run(tmp_path, "synthetic", "p", 1) as (ctl, sock, _):
        before = ctl.health["bad_messages"]
        hello = {"agent": "old", "host": "elsewhere", "pid": 2, "slots": 1, "prefetch": 0,
                 "caps": ["synthetic"], "held": [], "version": "0"}
        old = [bytes((1, T.HELLO)), msgpack.packb(hello)]
        other = zmq.Context.instance().socket(zmq.DEALER)
        try:
            other.connect(ctl.url)
            other.send_multipart(old)
            wait_for(lambda: ctl.health["bad_messages"] > before, 30, "the old HELLO refused")
            assert ctl.registry.by_id("old") is None
            said = [r.getMessage() for r in caplog.records]
            assert any(f"it speaks farm protocol 1, this controller {PROTOCOL_VERSION}" in line
                       for line in said), said  # and it is told so (tests/test_wire_version.py)
            assert other.poll(30_000) and other.recv_multipart()[0] == bytes((1, T.ERROR))
            other.send_multipart(pack(T.HELLO, hello))
            assert other.poll(30_000) and unpack(other.recv_multipart()).type is T.WELCOME
        finally:
            other.close(linger=0)


def test_a_registered_agent_s_bad_result_array_settles_nothing(tmp_path):
    """A result of the wrong length for a real lease is a bad message: dropped whole, its lease still
    held; the same result as a good array then settles it."""
    with peer_run(tmp_path, "synthetic", "p", 1) as (ctl, sock, run_id):
        run = ctl.runs[run_id]
        while True:
            assert sock.poll(30_000), "no JOBS came"
            msg = unpack(sock.recv_multipart())
            if msg.type is T.JOBS:
                break
        lease, key = msg.body["jobs"][0][:2]
        row = result_row({"lease": lease, "ok": True, "duration": 0.01})
        before = ctl.health["bad_messages"]
        sock.send_multipart(pack(T.RESULTS, {"results": [row[:-1]]}))
        wait_for(lambda: ctl.health["bad_messages"] > before, 30, "the bad RESULTS refused")
        assert key in run.leases and run.done == 0
        sock.send_multipart(pack(T.RESULTS, {"results": [row]}))
        wait_for(lambda: run.done == 1, 30, "the good result settled")
