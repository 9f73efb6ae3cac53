"""What farm reports of a job's attempts: how long each failed one ran, and one count of attempts
(the job's log, `farm jobs`, the run's summary), before and after a retry and a controller restart
(real controllers, real agent processes, the real CLI)."""

from __future__ import annotations

import subprocess
import sys

from conftest import wait_for

from farm.cli.control import log_text
from farm.client import Client, submit
from farm.controller.server import Controller
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]
HANG, CRASH = "job-0000001", "job-0000002"  # a job that never finishes, one that kills its worker
FAILING = "job-0000002"  # one that always fails


def _failed_attempt(client: Client, run: str, key: str) -> dict:
    attempt = client.job_log(run, key)["attempts"][-1]  # after any hand-back (queued behind a killed job)
    assert attempt["state"] == "failed", attempt
    return attempt


def test_failed_attempts_report_the_time_they_ran(controller, agents, synthetic):
    agents(controller.url, 1, slots=2)
    project = synthetic(jobs=3, hang=[HANG], crash=[CRASH], sleep=0.3, name="timed",
                        extra="[jobs]\ntimeout = 2\nmax_attempts = 1\n")
    summary = submit(controller.url, load_project(project))
    assert summary.state == "failed" and sorted(f["job"] for f in summary.failures) == [HANG, CRASH]
    with Client(controller.url) as client:
        hung = _failed_attempt(client, summary.id, HANG)
        assert "timed out after 2s" in hung["error"]
        # it ran its whole timeout before its worker was killed (not 0, as an agent's verdict said)
        assert 2.0 <= hung["duration_s"] < 30, hung
        crashed = _failed_attempt(client, summary.id, CRASH)
        assert "worker process died" in crashed["error"]
        assert 0 < crashed["duration_s"] < 30, crashed
        listed = {j["key"]: j for j in client.jobs(summary.id, "failed")["jobs"]}
        assert listed[HANG]["duration_s"] == hung["duration_s"]
        assert listed[CRASH]["duration_s"] == crashed["duration_s"]
    shown = subprocess.run([*FARM, "logs", summary.id, HANG, "--controller", controller.url],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"failed in {hung['duration_s']:.2f}s: timed out after 2s" in shown.stdout


def test_one_count_of_attempts_across_a_retry_and_a_restart(tmp_path, agents, synthetic):
    project = load_project(synthetic(jobs=3, fail=[FAILING], name="again",
                                     extra="[jobs]\nmax_attempts = 3\n"))
    state = tmp_path / "state"
    first = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4)
    first.start()
    try:
        agents(first.url, 1)
        run = submit(first.url, project).id
        with Client(first.url) as client:
            assert client.retry(run)["retried"] == [FAILING]
            wait_for(lambda: client.project(run)["state"] == "failed", 120, "the retried run to finish")
            assert _count(client, run) == 6
            # the summary (`farm download --json`, `farm submit --json`) counts as the job's log does
            (failure,) = first.runs[run].summary()["failures"]
            assert failure["attempts"] == 6, failure
            reply = client.job_log(run, FAILING)
            assert [a["attempt"] for a in reply["attempts"]] == [4, 5, 6]
            assert log_text(reply).splitlines()[0] == f"{run} {FAILING}: 3 of 6 attempts kept"
    finally:
        first.stop(shutdown_agents=True)

    again = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4)
    again.start()
    try:
        with Client(again.url) as client:
            assert _count(client, run) == 6  # the journal's count, as before the restart
            reply = client.job_log(run, FAILING)
            assert [a["attempt"] for a in reply["attempts"]] == [4, 5, 6]
        shown = subprocess.run([*FARM, "logs", run, FAILING, "--controller", again.url],
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert f"{run} {FAILING}: 3 of 6 attempts kept" in shown.stdout
        listed = subprocess.run([*FARM, "jobs", run, "--state", "failed", "--json",
                                 "--controller", again.url], capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert '"attempts": 6' in listed.stdout, listed.stdout
    finally:
        again.stop(shutdown_agents=True)


def _count(client: Client, run: str) -> int:
    (job,) = client.jobs(run, "failed")["jobs"]
    assert job["key"] == FAILING, job
    return job["attempts"]
