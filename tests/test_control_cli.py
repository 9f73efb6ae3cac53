"""The steering commands as a user runs them, and steering requests that are wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from conftest import wait_for

from farm.client import Client, submit
from farm.errors import ControlError
from farm.project import load_project
from farm.protocol import PROTOCOL_VERSION, T, pack

FARM = [sys.executable, "-m", "farm"]


def farm_json(*args: str, url: str) -> tuple[int, dict[str, Any]]:
    """`farm ARGS --controller URL --json`: its exit code and the one JSON object it printed."""
    done = subprocess.run([*FARM, *args, "--controller", url, "--json"], capture_output=True, text=True,
                          timeout=120)
    (line,) = done.stdout.splitlines()  # exactly one object, errors included
    return done.returncode, json.loads(line)


def test_the_steering_commands_with_json(controller, agents, synthetic):
    agents(controller.url, 1)
    with Client(controller.url) as client:
        run = client.submit(load_project(synthetic(jobs=30, sleep=0.2, fail=["job-0000003"], name="steered",
                                                   extra="[jobs]\nmax_attempts = 1\n")))
        wait_for(lambda: client.project(run)["done"] >= 1, 60, "some progress")
        rc, paused = farm_json("pause", run, url=controller.url)
        assert rc == 0 and paused["project"] == run and paused["paused"] is True
        assert paused["running"] in (0, 1, 2)  # one slot, and one job queued behind it (QUEUE_ONE_S)
        rc, again = farm_json("pause", "steered", url=controller.url)  # by name: its newest run
        assert rc == 1 and again["code"] == "conflict" and "already paused" in again["error"]
        assert farm_json("priority", run, "5", url=controller.url) == (0, {"project": run, "priority": 5,
                                                                            "previous": 0})
        assert farm_json("priority", run, "-5", url=controller.url)[1]["priority"] == -5  # not an option
        rc, drained = farm_json("drain", "agent-0", url=controller.url)
        assert rc == 0 and drained["state"] == "draining"
        assert farm_json("undrain", "agent-0", url=controller.url)[1]["state"] == "active"
        rc, missing = farm_json("drain", "nobody", url=controller.url)
        assert rc == 1 and missing["code"] == "not_found"
        wait_for(lambda: client.project(run)["running"] == 0, 60, "the job in flight")
        resumed = {"project": run, "paused": False, "running": 0}
        assert farm_json("resume", run, url=controller.url) == (0, resumed)
        wait_for(lambda: client.project(run)["state"] == "failed", 120, "the run to end")
    rc, logs = farm_json("logs", run, "job-0000003", url=controller.url)
    (attempt,) = logs["attempts"]
    assert rc == 0 and attempt["state"] == "failed" and "RenderError" in attempt["log"]
    rc, retried = farm_json("retry", run, "job-0000003", url=controller.url)
    assert rc == 0 and retried["retried"] == ["job-0000003"]
    text = subprocess.run([*FARM, "logs", run, "job-0000001", "--controller", controller.url],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "-- attempt 1 on agent-0: done" in text.stdout
    rc, unknown = farm_json("logs", run, "job-0009999", url=controller.url)
    assert rc == 1 and unknown["code"] == "not_found"


def _answer(client: Client, kind: T, body: dict[str, Any]) -> ControlError:
    client.send(kind, body)
    with pytest.raises(ControlError) as refused:
        client.receive()
    return refused.value


def test_malformed_and_impossible_requests_get_an_error_with_a_code(controller, agents, synthetic):
    agents(controller.url, 1)
    run = submit(controller.url, load_project(synthetic(jobs=2, name="over"))).id
    with Client(controller.url) as client:
        bad = [
            (T.CONTROL, {"action": "priority", "project": run, "priority": "high"}),  # wrong type
            (T.CONTROL, {"action": "explode", "project": run}),
            (T.CONTROL, {"action": "pause"}),  # no project
            (T.CONTROL, {"action": "pause", "project": "../../etc"}),
            (T.CONTROL, {"action": "priority", "project": run, "priority": 10**7}),
            (T.CONTROL, {"action": "retry", "project": run, "keys": ["a"] * 10_001}),
            (T.CONTROL, {"action": "retry", "project": run, "keys": ["/abs"]}),
            (T.CONTROL, {"action": "retry", "project": run, "keys": [1, 2]}),
            (T.CONTROL, {"action": "drain", "agent": "a\x00b"}),
            (T.QUERY, {"what": "everything", "project": run}),
            (T.QUERY, {"what": "log", "project": run}),  # no key
            (T.QUERY, {"what": "jobs", "project": run, "limit": 2**40}),
        ]
        for kind, body in bad:
            error = _answer(client, kind, body)
            assert error.code == "bad_request", (body, error)
        assert _answer(client, T.CONTROL, {"action": "pause", "project": "nothing-here"}).code == "not_found"
        assert _answer(client, T.CONTROL, {"action": "drain", "agent": "ghost"}).code == "not_found"
        assert _answer(client, T.CONTROL, {"action": "undrain", "agent": "agent-0"}).code == "conflict"
        for action in ("pause", "resume"):  # a finished run
            error = _answer(client, T.CONTROL, {"action": action, "project": run})
            assert error.code == "conflict" and "done" in str(error)
        late = _answer(client, T.CONTROL, {"action": "priority", "project": run, "priority": 3})
        assert late.code == "conflict"
        client.sock.send_multipart([bytes((PROTOCOL_VERSION, T.CONTROL)), b"\x92\x01\x02"])  # a list, not a map
        with pytest.raises(ControlError, match="must be a map"):
            client.receive()
        client.sock.send_multipart(pack(T.CONTROL, {"action": "pause", "project": run})[:1])  # no body frame
        with pytest.raises(ControlError):
            client.receive()
        assert client.project(run)["state"] == "done"  # and the controller carries on
        assert client.retry(run) == {"project": run, "retried": [], "state": "done"}  # nothing failed
