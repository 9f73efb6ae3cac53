"""Control actions through HTTP against a running controller with real agents: pause, resume, cancel,
retry, priority, drain, jobs and logs, and control requests a cross-site page could send, refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import wait_for
from http_helpers import TIMEOUT, HttpFarm, Submitted, sse, start_http_farm


@pytest.fixture
def web(tmp_path: Path) -> Iterator[HttpFarm]:
    farm = start_http_farm(tmp_path / "state")
    yield farm
    farm.controller.stop(shutdown_agents=True)


def _project(web: HttpFarm, name: str) -> dict:
    response = web.get(f"/api/v1/projects/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def test_pause_stops_leases_resume_finishes_and_priority_changes(web, agents, synthetic):
    agents(web.controller.url, 2)
    run = Submitted(web.controller.url, synthetic(jobs=40, sleep=0.05, name="steered"))
    wait_for(lambda: web.get("/api/v1/projects").json()["projects"], what="the run")
    wait_for(lambda: _project(web, "steered")["done"] >= 3, what="a few jobs done")

    with requests.get(web.base + "/api/v1/events", headers=web.auth, stream=True, timeout=TIMEOUT) as stream:
        messages = sse(stream)
        next(m for m in messages if m.id is not None)  # subscribed: the stream holds what follows
        paused = web.post("/api/v1/projects/steered/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True
        assert web.post("/api/v1/projects/steered/pause").status_code == 409  # already paused
        # the agents finish what they hold; then nothing new is leased while the stream ticks on five
        # times (progress reports of the idle run, or the API's keep-alives if those are held back)
        quiet = 0
        idle = False
        started_after_pause = []
        pause_seen = False
        deadline = time.monotonic() + 60
        for message in messages:
            assert time.monotonic() < deadline, "the paused run did not go quiet"
            if message.comment and idle:
                quiet += 1
            elif message.data and message.event is None:
                event = message.json()
                if event["type"] == "run.paused":
                    pause_seen = True
                elif event["type"] == "job.started" and pause_seen:
                    started_after_pause.append(event["job"])
                elif event["type"] == "progress" and pause_seen:
                    idle = event["running"] == 0
                    quiet = quiet + 1 if idle else 0
            if quiet == 5:
                break
    assert started_after_pause == []
    snap = _project(web, "steered")
    assert snap["paused"] is True and snap["state"] == "running" and snap["done"] < 40

    patched = web.patch("/api/v1/projects/steered", {"priority": 7})
    assert patched.status_code == 200, patched.text
    assert patched.json()["priority"] == 7 and _project(web, "steered")["priority"] == 7

    resumed = web.post("/api/v1/projects/steered/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert web.post("/api/v1/projects/steered/resume").status_code == 409  # not paused
    summary = run.result()
    assert summary.ok and summary.done == 40
    assert web.patch("/api/v1/projects/steered", {"priority": 1}).status_code == 409  # finished
    assert web.post("/api/v1/projects/no-such-run/pause").status_code == 404
    assert web.get("/api/v1/projects/no-such-run").status_code == 404


def test_cancel_a_paused_run(web, agents, synthetic):
    agents(web.controller.url, 1)
    run = Submitted(web.controller.url, synthetic(jobs=30, sleep=0.05, name="doomed"))
    wait_for(lambda: web.get("/api/v1/projects").json()["projects"], what="the run")
    assert web.post("/api/v1/projects/doomed/pause").status_code == 200
    cancelled = web.post("/api/v1/projects/doomed/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert run.result().state == "cancelled"
    again = web.post("/api/v1/projects/doomed/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]
    assert web.post("/api/v1/projects/nothing-here/cancel").status_code == 404


def test_jobs_logs_and_retry_of_exactly_the_failed_jobs(web, agents, synthetic):
    agents(web.controller.url, 2)
    project = synthetic(jobs=12, fail=["job-0000002", "job-0000007"], name="flaky")
    summary = Submitted(web.controller.url, project).result()
    assert summary.failed == 2
    run_id = summary.id

    pages = [web.get(f"/api/v1/projects/{run_id}/jobs?limit=5&offset={o}").json() for o in (0, 5, 10)]
    assert all(p["total"] == 12 for p in pages)
    listed = [job for page in pages for job in page["jobs"]]
    assert sorted(j["key"] for j in listed) == [f"job-{i:07d}" for i in range(12)]
    shown = web.get(f"/api/v1/projects/{run_id}").json()
    assert shown["failed"] == 2 and [f["key"] for f in shown["failures"]] == ["job-0000002", "job-0000007"]
    failed = web.get(f"/api/v1/projects/{run_id}/jobs?state=failed").json()
    assert [j["key"] for j in failed["jobs"]] == ["job-0000002", "job-0000007"]
    assert all(j["attempts"] == 3 and "set to fail" in j["error"] for j in failed["jobs"])
    done = web.get(f"/api/v1/projects/{run_id}/jobs?state=done").json()
    assert done["total"] == 10 and all(j["agent"] in ("agent-0", "agent-1") for j in done["jobs"])

    log = web.get(f"/api/v1/projects/{run_id}/jobs/job-0000002/log").json()
    assert log["key"] == "job-0000002" and len(log["attempts"]) == 3
    assert all("set to fail" in (a["error"] or "") for a in log["attempts"])
    ok_log = web.get(f"/api/v1/projects/{run_id}/jobs/job-0000003/log").json()
    assert [a["state"] for a in ok_log["attempts"]] == ["done"]
    assert web.get(f"/api/v1/projects/{run_id}/jobs/job-9999999/log").status_code == 404

    assert web.post(f"/api/v1/projects/{run_id}/retry", {"keys": ["job-0000003"]}).status_code == 409  # it is done
    assert web.post(f"/api/v1/projects/{run_id}/retry", {"keys": ["job-0000999"]}).status_code == 404
    retried = web.post(f"/api/v1/projects/{run_id}/retry", {"keys": ["job-0000007"]})
    assert retried.status_code == 200, retried.text
    assert retried.json()["retried"] == ["job-0000007"]

    def numbers(key: str) -> list[int]:  # the attempts kept (the last 3), by number
        return [a["attempt"] for a in web.get(f"/api/v1/projects/{run_id}/jobs/{key}/log").json()["attempts"]]

    wait_for(lambda: _project(web, run_id)["state"] == "failed" and numbers("job-0000007") == [4, 5, 6],
             what="the retried job to fail again, three fresh attempts")
    # exactly the job named ran again: the other failed one, and the done ones, did not
    assert numbers("job-0000002") == [1, 2, 3] and numbers("job-0000003") == [1]

    everything = web.post(f"/api/v1/projects/{run_id}/retry")  # no body: every failed job
    assert everything.status_code == 200 and everything.json()["retried"] == ["job-0000002", "job-0000007"]


def test_drain_empties_an_agent_and_undrain_gives_it_work(web, agents, synthetic):
    agents(web.controller.url, 2)
    wait_for(lambda: len(web.get("/api/v1/agents").json()["agents"]) == 2, what="two agents")
    drained = web.post("/api/v1/agents/agent-0/drain")
    assert drained.status_code == 200 and drained.json()["state"] == "draining"
    assert web.post("/api/v1/agents/agent-0/drain").status_code == 409
    states = {a["id"]: a["state"] for a in web.get("/api/v1/agents").json()["agents"]}
    assert states == {"agent-0": "draining", "agent-1": "active"}

    summary = Submitted(web.controller.url, synthetic(jobs=10, name="around")).result()
    assert summary.ok
    done = web.get(f"/api/v1/projects/{summary.id}/jobs?state=done").json()["jobs"]
    assert {j["agent"] for j in done} == {"agent-1"}

    assert web.post("/api/v1/agents/agent-0/undrain").json()["state"] == "active"
    assert web.post("/api/v1/agents/no-such-agent/drain").status_code == 404


def test_control_actions_a_cross_site_page_could_send_are_refused(web, agents, synthetic):
    agents(web.controller.url, 1)
    run = Submitted(web.controller.url, synthetic(jobs=20, sleep=0.05, name="target"))
    wait_for(lambda: web.get("/api/v1/projects").json()["projects"], what="the run")
    url = web.base + "/api/v1/projects/target/pause"
    attempts = [
        (requests.post(url, data="{}", headers={**web.auth, "Content-Type": "text/plain"},
                       timeout=TIMEOUT), 415),
        (requests.post(url, data={"a": "b"}, headers=web.auth, timeout=TIMEOUT), 415),  # a form post
        (requests.post(url, headers=web.auth, timeout=TIMEOUT), 415),  # no body, no type
        (web.post("/api/v1/projects/target/pause", headers={"Origin": "http://evil.example"}), 403),
        (web.post("/api/v1/projects/target/pause", headers={"Origin": "null"}), 403),
        (web.post("/api/v1/projects/target/pause", headers={"Sec-Fetch-Site": "cross-site"}), 403),
        (web.post("/api/v1/projects/target/pause", headers={"Sec-Fetch-Site": "same-site"}), 403),
        (web.patch("/api/v1/projects/target", {"priority": 5}, headers={"Origin": "http://localhost:1"}), 403),
    ]
    for response, status in attempts:
        assert response.status_code == status, response.text
        assert "error" in response.json()
    snap = _project(web, "target")
    assert snap["paused"] is False and snap["priority"] == 0  # none of them did anything
    # the dashboard's own request: same origin, JSON
    ours = web.post("/api/v1/projects/target/pause", headers={"Origin": web.base, "Sec-Fetch-Site": "same-origin"})
    assert ours.status_code == 200, ours.text
    assert web.post("/api/v1/projects/target/resume").status_code == 200
    assert run.result().ok
