"""One JobSpec and one JobResult, encoded and checked in farm.protocol; the agent-worker messages too."""

from __future__ import annotations

import msgpack
import pytest
from blake3 import blake3

from farm.agent.wresults import packed, read
from farm.errors import ProtocolError
from farm.protocol import SHAPES, JobResult, JobSpec, T, pack, pack_body, unpack


def test_a_job_spec_travels_unchanged():
    spec = JobSpec("lease1", "tile-3", "run-1", {"z": 3}, {"tile-2": [1, 2]}, 30.0)
    # to an agent the controller sends the named tuple's fields, an array; and so does the agent to its worker
    to_agent = unpack(pack(T.JOBS, {"jobs": [tuple(spec)], "projects": {}})).body["jobs"]
    assert to_agent == [list(spec)] and JobSpec.from_rows(to_agent) == [spec]
    to_worker = unpack(pack(T.W_JOBS, {"jobs": [spec], "projects": {}, "threads": 2})).body["jobs"]
    assert to_worker == [list(spec)] and JobSpec.from_rows(to_worker) == [spec]


def test_a_job_result_travels_unchanged_with_its_files():
    data = b"png bytes"
    result = JobResult("lease1", True, {"n": 1}, [["t/0.png", len(data), blake3(data).digest()]], duration=0.5)
    failed = JobResult("lease2", False, error="RenderError: no", log="tail", retry=False)
    handed = JobResult("lease3", False, error="not started", requeue=True)
    wires = [r.to_wire() for r in (result, failed, handed)]
    msg = unpack(pack(T.RESULTS, {"results": wires}, [data]))
    assert [JobResult.from_wire(r) for r in msg.body["results"]] == [result, failed, handed]
    assert msg.payloads == [data]
    # from a worker: the RESULTS body packed for its agent to send on, its leases and durations beside it
    msg = unpack(pack_body(T.W_RESULTS, packed(wires), [data]))
    assert msg.body["leases"] == ["lease1", "lease2", "lease3"] and msg.body["durations"] == [0.5, 0.0, 0.0]
    assert [JobResult.from_wire(r) for r in read(msg.body)] == [result, failed, handed]
    assert msg.payloads == [data]


@pytest.mark.parametrize(("kind", "body"), [
    (T.W_JOBS, {"jobs": [{"lease": 1, "key": "k", "project": "p", "params": None, "deps": {}, "timeout": 1}],
                "projects": {}, "threads": 1}),
    (T.W_JOBS, {"jobs": [["l", "k", "p", None, {}, 1], [1, "k", "p", None, {}, 1]], "projects": {},
                "threads": 1}),
    (T.W_JOBS, {"jobs": [["l", "k", "p", None, {}, 1], ["l", "k", "p", None, {}]], "projects": {},
                "threads": 1}),
    (T.W_JOBS, {"jobs": [["l", "k", "p", None, {}, True]], "projects": {}, "threads": 1}),
    (T.W_JOBS, {"jobs": [], "projects": {}}),  # no threads
    (T.W_RESULTS, {"results": [["l", True, None, [], None, None, 0, False, True]]}),
    (T.W_RESULTS, {"leases": ["l"], "durations": [], "results": b"\x80"}),
    (T.W_RESULTS, {"leases": [1], "durations": [0], "results": b"\x80"}),
    (T.W_RESULTS, {"leases": ["l"], "durations": [True], "results": b"\x80"}),
    (T.W_RESULTS, {"leases": ["l"], "durations": [0], "results": "\x80"}),
    (T.W_PROGRESS, {"lease": "l", "fraction": "half"}),
    (T.W_READY, {}),
])
def test_agent_worker_messages_are_checked_like_network_ones(kind, body):
    with pytest.raises(ProtocolError):
        unpack(pack(kind, body))


@pytest.mark.parametrize("inner", [
    # checked as a RESULTS body; then, for the lease it lists
    {"results": [["l", "yes", None, [], None, None, 0, False, True]]},
    {"results": [["other", True, None, [], None, None, 0, False, True]]},
    {"results": [{"lease": "l", "ok": True, "result": None, "files": [], "duration": 0}]},  # protocol 1's map
])
def test_the_results_a_worker_packed_are_checked_when_its_agent_reads_them(inner):
    frames = pack(T.W_RESULTS, {"leases": ["l"], "durations": [0], "results": msgpack.packb(inner)})
    body = unpack(frames).body
    with pytest.raises(ProtocolError):
        read(body)


def test_every_message_type_has_a_shape_and_there_is_no_stop():
    assert set(SHAPES) == set(T)
    assert not any(t.name.endswith("STOP") for t in T)
