"""The HTTP API against a running controller with real agent processes: reads, events, metrics, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import wait_for
from http_helpers import TIMEOUT, HttpFarm, Submitted, sse, start_http_farm
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def web(tmp_path: Path) -> Iterator[HttpFarm]:
    farm = start_http_farm(tmp_path / "state")
    yield farm
    farm.controller.stop(shutdown_agents=True)


def _metrics(web: HttpFarm) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert web.controller.events.drain(30)  # the counters have seen every event so far
    response = web.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_a_run_seen_through_every_read_endpoint(web, agents, synthetic):
    agents(web.controller.url, 2, extra=["--tag", "gpu"])
    wait_for(lambda: len(web.get("/api/v1/agents").json()["agents"]) == 2, what="two agents")
    project = synthetic(jobs=12, sleep=0.01, fail=["job-0000005"], name="seen")
    summary = Submitted(web.controller.url, project).result()
    assert summary.failed == 1 and summary.done == 11

    projects = web.get("/api/v1/projects").json()["projects"]
    (snap,) = [p for p in projects if p["id"] == summary.id]
    assert snap["state"] == "failed" and snap["media_type"] == "synthetic"
    assert snap["progress"]["jobs"] == {"total": 12, "done": 11, "failed": 1, "reused": 0, "running": 0,
                                        "collating": 0}

    agents_now = web.get("/api/v1/agents").json()["agents"]
    assert {a["id"] for a in agents_now} == {"agent-0", "agent-1"}
    for agent in agents_now:
        assert agent["state"] == "active"
        assert "synthetic" in agent["capabilities"] and agent["tags"] == ["gpu"]
        assert agent["slots"] == 1 and agent["running"] == [] and agent["load"] == 0
        assert agent["last_heartbeat_s"] < 10

    openapi = web.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/projects", "/api/v1/projects/{project}", "/api/v1/projects/{project}/jobs",
                 "/api/v1/agents", "/api/v1/events", "/api/v1/projects/{project}/pause",
                 "/api/v1/agents/{agent}/drain", "/metrics"):
        assert path in openapi["paths"], path
    assert "patch" in openapi["paths"]["/api/v1/projects/{project}"]

    values = _metrics(web)
    media = (("media_type", "synthetic"),)
    assert values[("farm_jobs_done_total", media)] == 11
    assert values[("farm_jobs_failed_total", media)] == 1
    # job-0000005 failed on both agents (3 attempts by default): two failed attempts were retried,
    # beside any job handed back or lost on the way (retried at no attempt)
    retried = [e for e in list(web.controller.events.buffer) if e.type == "job.retried"]
    assert len([e for e in retried if e.data["counted"]]) == 2
    assert values[("farm_jobs_retried_total", media)] == len(retried)
    assert values[("farm_job_duration_seconds_count", media)] == 11
    assert values[("farm_agents", (("state", "active"),))] == 2
    assert values[("farm_agents", (("state", "broken"),))] == 0
    assert values[("farm_runs", (("state", "failed"),))] == 1
    assert values[("farm_sync_bytes_total", (("direction", "out"),))] > 0  # the agents fetched farm.toml


def test_metrics_count_reused_jobs_apart_and_time_only_rendered_ones(web, agents, synthetic):
    agents(web.controller.url, 1)
    project = synthetic(jobs=5, sleep=0.05, cache=True, name="cached")
    assert Submitted(web.controller.url, project).result().ok
    again = Submitted(web.controller.url, project).result()  # unchanged: every job comes from the cache
    assert again.ok and again.reused == 5
    values = _metrics(web)
    media = (("media_type", "synthetic"),)
    assert values[("farm_jobs_done_total", media)] == 10
    assert values[("farm_jobs_reused_total", media)] == 5
    assert values[("farm_job_duration_seconds_count", media)] == 5
    assert values[("farm_job_duration_seconds_sum", media)] >= 5 * 0.05  # each slept 50 ms at least
    assert values[("farm_job_duration_seconds_bucket", (("le", "0.01"), *media))] == 0
    assert values[("farm_jobs_failed_total", media)] == 0
    assert values[("farm_runs", (("state", "done"),))] == 2
    assert not any(value for (name, _), value in values.items() if name in ("farm_jobs_running", "farm_jobs_queued"))

def test_events_resume_with_last_event_id_without_gap_or_repeat(web, agents, synthetic):
    agents(web.controller.url, 2)
    project = synthetic(jobs=30, sleep=0.02, name="resumed")
    first: list[int] = []
    with requests.get(web.base + "/api/v1/events?since=0", headers=web.auth, stream=True,
                      timeout=TIMEOUT) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        run = Submitted(web.controller.url, project)
        for message in sse(stream):
            if message.data and message.event is None:
                event = message.json()
                assert message.id == f"{web.controller.events.epoch}:{event['seq']}"
                first.append(event["seq"])
                if event["type"] == "job.done":  # leave in the middle of the run
                    break
    assert first == list(range(1, len(first) + 1))
    summary = run.result()
    assert summary.ok

    rest: list[int] = []
    keepalive = False
    headers = {**web.auth, "Last-Event-ID": f"{web.controller.events.epoch}:{first[-1]}"}
    # ?since=0 stays in the URL, as a browser's EventSource keeps it: the header wins
    with requests.get(web.base + "/api/v1/events?since=0", headers=headers, stream=True, timeout=TIMEOUT) as stream:
        for message in sse(stream):
            if message.comment:
                keepalive = True  # the stream goes quiet once the run is over
            if message.data and message.event is None:
                event = message.json()
                rest.append(event["seq"])
                if event["type"] == "run.finished":
                    finished_at = time.monotonic()
            if keepalive and rest and rest[-1] >= web.controller.events.last - 1:
                break
    assert rest[0] == first[-1] + 1
    seen = first + rest
    assert seen == list(range(1, seen[-1] + 1))  # no gap, no repeat
    assert finished_at


def test_events_from_now_on_set_the_last_event_id(web):
    with requests.get(web.base + "/api/v1/events", headers=web.auth, stream=True, timeout=TIMEOUT) as stream:
        messages = sse(stream)
        first = next(m for m in messages if m.id is not None)
        # a reconnect misses nothing
        assert first.data == [] and first.id == f"{web.controller.events.epoch}:{web.controller.events.last}"
        assert next(messages).comment  # nothing happens: a keep-alive comment


def test_malformed_requests_get_a_json_reason_naming_the_field(web):
    bad = [
        (web.get("/api/v1/events", headers={"Last-Event-ID": "abc"}), 400, "Last-Event-ID"),
        (web.get("/api/v1/events?since=-1"), 422, "query.since"),
        (web.get("/api/v1/projects/x/jobs?limit=0"), 422, "query.limit"),
        (web.get("/api/v1/projects/x/jobs?state=sleeping"), 422, "query.state"),
        (web.get("/api/v1/projects/x/jobs?offset=many"), 422, "query.offset"),
        (web.patch("/api/v1/projects/x", {"priority": "high"}), 422, "body.priority"),
        (web.patch("/api/v1/projects/x", {"priority": 10**12}), 422, "body.priority"),
        (web.patch("/api/v1/projects/x", {"priority": 1, "colour": "red"}), 422, "body.colour"),
        (web.patch("/api/v1/projects/x", {}), 422, "body.priority"),
        (web.post("/api/v1/projects/x/retry", {"keys": "job-1"}), 422, "body.keys"),
        (web.post("/api/v1/projects/x/retry", {"keys": [""]}), 422, "body.keys.0"),
        (requests.post(web.base + "/api/v1/projects/x/pause", data="{not json", timeout=TIMEOUT,
                       headers={**web.auth, "Content-Type": "application/json"}), 400,
         "body: not valid JSON (Expecting "),
        (web.get("/api/v1/no-such-thing"), 404, "Not Found"),
        # identifiers are checked by the controller, as any client's are
        (web.get("/api/v1/projects/%2e%2e"), 400, "project '..'"),
        (web.get("/api/v1/projects/-rf"), 400, "starts with '-'"),
        (web.get("/api/v1/projects/a%00b"), 400, "U+0000"),
        (web.post("/api/v1/agents/%2e%2e/drain"), 400, "agent '..'"),
        (web.get("/api/v1/projects/nothing"), 404, "no project 'nothing'"),
    ]
    for response, status, named in bad:
        assert response.status_code == status, (response.request.url, response.text)
        assert response.headers["content-type"] == "application/json"
        assert named in response.json()["error"], (response.request.url, response.json())


def test_event_streams_are_bounded_and_a_closed_one_frees_its_place(web):
    from farm.http.sse import MAX_STREAMS

    streams = [requests.get(web.base + "/api/v1/events", headers=web.auth, stream=True, timeout=TIMEOUT)
               for _ in range(MAX_STREAMS)]
    try:
        assert all(s.status_code == 200 for s in streams)
        refused = web.get("/api/v1/events")
        assert refused.status_code == 503 and "event streams" in refused.json()["error"]
        streams.pop().close()  # noticed at its next keep-alive

        def another() -> bool:
            response = requests.get(web.base + "/api/v1/events", headers=web.auth, stream=True,
                                    timeout=TIMEOUT)
            if response.status_code == 200:
                streams.append(response)
                return True
            response.close()
            return False

        wait_for(another, timeout=30, what="the closed stream's place")
        assert web.get("/api/v1/projects").status_code == 200  # the pool still answers the rest
    finally:
        for stream in streams:
            stream.close()
