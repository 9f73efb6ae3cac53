"""Retry of failed jobs, job logs of every attempt, and the jobs query, with real agents."""

from __future__ import annotations

import collections

import pytest
from conftest import wait_for
from control_helpers import EventLog, chatty_plugin, jobs_all

from farm.client import Client, submit
from farm.controller.joblogs import JobLogs
from farm.errors import ControlError
from farm.project import load_project

FAILING = ["job-0000001", "job-0000004"]


def _finished(log: EventLog, run: str, times: int) -> None:
    wait_for(lambda: len(log.of("run.finished", run)) >= times, 120, f"the run to finish ({times})")


def test_retry_reruns_exactly_the_failed_jobs_and_the_run_finishes_again(controller, agents, synthetic):
    log = EventLog(controller)
    agents(controller.url, 1)
    project = synthetic(jobs=6, fail=FAILING, extra="[jobs]\nmax_attempts = 2\n", name="flaky")
    summary = submit(controller.url, load_project(project))
    run = summary.id
    assert summary.state == "failed" and sorted(f["job"] for f in summary.failures) == FAILING
    with Client(controller.url) as client:
        retried = controller.events.last
        reply = client.retry(run)
        assert sorted(reply["retried"]) == FAILING and reply["state"] == "running"
        _finished(log, run, 2)
        starts = collections.Counter(e.job for e in log.settled().of("job.started", run, after=retried))
        assert starts == {key: 2 for key in FAILING}  # exactly those, each with fresh attempts
        manual = [e for e in log.of("job.retried", run) if e.data.get("manual")]
        assert sorted(e.job for e in manual) == FAILING
        snap = client.project(run)
        assert snap["state"] == "failed" and snap["done"] == 4 and snap["failed"] == 2

        # one key only
        again = controller.events.last
        assert client.retry(run, ["job-0000004"])["retried"] == ["job-0000004"]
        _finished(log, run, 3)
        assert {e.job for e in log.settled().of("job.started", run, after=again)} == {"job-0000004"}

        # what cannot be retried says why, with its code
        with pytest.raises(ControlError) as done_job:
            client.retry(run, ["job-0000002"])
        assert done_job.value.code == "conflict" and "has not failed for good" in str(done_job.value)
        with pytest.raises(ControlError) as unknown:
            client.retry(run, ["job-0000099"])
        assert unknown.value.code == "not_found"
        with pytest.raises(ControlError) as nothing:
            client.retry("no-such-run")
        assert nothing.value.code == "not_found"


def test_retry_of_a_job_whose_dependency_failed_waits_for_the_dependency(controller, agents, synthetic):
    log = EventLog(controller)
    agents(controller.url, 1)
    project = synthetic(jobs=4, fail=["job-0000000"], depend_on_first=True, name="deps",
                        extra="[jobs]\nmax_attempts = 1\n")
    summary = submit(controller.url, load_project(project))
    assert summary.failed == 4  # the first failed, and its dependants with it
    with Client(controller.url) as client:
        # a dependant alone stays failed: its dependency has not been retried
        assert client.retry(summary.id, ["job-0000002"])["retried"] == []
        retried = controller.events.last
        assert sorted(client.retry(summary.id)["retried"]) == [f"job-{i:07d}" for i in range(4)]
        _finished(log, summary.id, 2)
        # the dependency ran (and failed again); its dependants waited and failed with it, unrun
        assert [e.job for e in log.settled().of("job.started", summary.id, after=retried)] == ["job-0000000"]
        assert client.project(summary.id)["failed"] == 4


def test_job_logs_and_the_jobs_query(controller, agents, synthetic):
    agents(controller.url, 1)
    project = synthetic(jobs=6, fail=FAILING, extra="[jobs]\nmax_attempts = 2\n", name="logged")
    run = submit(controller.url, load_project(project)).id
    with Client(controller.url) as client:
        failed = client.job_log(run, "job-0000001")
        assert failed["project"] == run and [a["attempt"] for a in failed["attempts"]] == [1, 2]
        for attempt in failed["attempts"]:
            assert attempt["state"] == "failed" and attempt["agent"] == "agent-0"
            assert "job-0000001 is set to fail" in attempt["error"] and "RenderError" in attempt["log"]
            assert attempt["duration_s"] is not None and attempt["duration_s"] >= 0
        (done,) = client.job_log(run, "job-0000002")["attempts"]
        assert done["state"] == "done" and done["error"] is None and done["agent"] == "agent-0"

        everything = jobs_all(client, run)
        assert len(everything) == 6 == client.jobs(run)["total"]
        assert len({j["key"] for j in everything}) == 6  # pages neither repeat nor skip
        by_key = {j["key"]: j for j in everything}
        assert {k for k, j in by_key.items() if j["state"] == "failed"} == set(FAILING)
        assert by_key["job-0000001"]["attempts"] == 2 and "is set to fail" in by_key["job-0000001"]["error"]
        third = by_key["job-0000003"]
        assert third == {"key": "job-0000003", "state": "done", "attempts": 1, "agent": "agent-0",
                         "duration_s": third["duration_s"], "error": None}
        assert third["duration_s"] is not None
        assert [j["key"] for j in client.jobs(run, "failed")["jobs"]] == FAILING
        page = client.jobs(run, "done", offset=1, limit=2)
        assert page["total"] == 4 and [j["key"] for j in page["jobs"]] == ["job-0000002", "job-0000003"]
        assert client.jobs(run, "running")["total"] == 0 and client.jobs(run, "reused")["jobs"] == []

        for bad in ({"state": "bogus"}, {"limit": 0}, {"limit": 5000}, {"offset": -1}):
            with pytest.raises(ControlError) as refused:
                client.jobs(run, **bad)
            assert refused.value.code == "bad_request", bad
        with pytest.raises(ControlError) as unknown:
            client.job_log(run, "job-0000077")
        assert unknown.value.code == "not_found"
        with pytest.raises(ControlError) as climbing:
            client.job_log(run, "../etc")
        assert climbing.value.code == "bad_request"


def test_reused_jobs_are_listed_as_reused(controller, agents, synthetic):
    agents(controller.url, 1)
    project = synthetic(jobs=3, cache=True, name="cached")
    submit(controller.url, load_project(project))
    again = submit(controller.url, load_project(project))
    assert again.reused == 3
    with Client(controller.url) as client:
        reused = client.jobs(again.id, "reused")
        assert reused["total"] == 3 and {j["state"] for j in reused["jobs"]} == {"reused"}
        assert all(j["agent"] is None and j["attempts"] == 0 for j in reused["jobs"])
        assert client.jobs(again.id, "done")["total"] == 0
        assert client.job_log(again.id, "job-0000000")["attempts"] == []  # never ran: no attempt, no error


def test_the_log_of_a_job_that_succeeded_is_kept(controller, agents, tmp_path):
    env = chatty_plugin(tmp_path / "site")
    agents(controller.url, 1, env=env)
    project = tmp_path / "talk"
    project.mkdir()
    (project / "farm.toml").write_text('[project]\nname = "talk"\nmedia_type = "chatty"\n'
                                       '[chatty]\njobs = 2\n')
    summary = submit(controller.url, load_project(project))
    assert summary.ok, summary
    with Client(controller.url) as client:
        (attempt,) = client.job_log(summary.id, "talk-1")["attempts"]
    assert attempt["state"] == "done" and "rendering talk-1, all is well" in attempt["log"]


def test_job_logs_are_bounded_per_job_and_per_run():
    logs = JobLogs(per_job=3, log_bytes=1000, per_run_bytes=20_000)
    for attempt in range(5):
        logs.record("a", agent="n1", state="failed", error="boom", duration_s=0.5,
                    log="x" * 5000 + str(attempt))
    kept = logs.attempts("a")
    assert [a["attempt"] for a in kept] == [3, 4, 5]  # the last three
    assert all(len(a["log"]) == 1000 and a["log"].endswith(str(a["attempt"] - 1)) for a in kept)  # tails
    for i in range(100):
        logs.record(f"job-{i}", agent="n1", state="done", error=None, duration_s=0.1, log="y" * 900)
    assert logs.bytes <= 20_000 and logs.evicted > 0
    assert logs.attempts("a") == [] and logs.attempts("job-0") == []  # the oldest went first
    assert logs.attempts("job-99")[0]["log"] == "y" * 900
    assert logs.live == sum(len(logs.attempts(f"job-{i}")) for i in range(100))
    # a job retried over and over stays bounded too, however long the run
    for _ in range(10_000):
        logs.record("again", agent="n1", state="failed", error="e", duration_s=0.0, log="z")
    assert len(logs.attempts("again")) == 3 and len(logs._order) < 2 * logs.live + 1100
