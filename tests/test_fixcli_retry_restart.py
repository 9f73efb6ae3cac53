"""`farm retry` on a run that finished before a controller restart says what to do, and doing it
(submitting again) reuses the done jobs (real controller restart, real agents, the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

from farm.client import submit
from farm.controller.server import Controller
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


def test_retry_after_a_restart_says_submit_again_and_that_reuses_the_done_jobs(tmp_path, agents, synthetic):
    project = load_project(synthetic(jobs=6, fail=["job-0000003"], cache=True, name="restarted",
                                     extra="[jobs]\nmax_attempts = 1\n"))
    state = tmp_path / "state"
    first = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4)
    first.start()
    try:
        agents(first.url, 1)
        before = submit(first.url, project)
    finally:
        first.stop(shutdown_agents=True)
    assert before.state == "failed" and (before.done, before.failed) == (5, 1)

    again = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4)
    again.start()
    try:
        done = subprocess.run([*FARM, "retry", "restarted", "--json", "--controller", again.url],
                              capture_output=True, text=True, timeout=120)
        refused = json.loads(done.stdout)
        assert done.returncode == 1 and refused["code"] == "conflict"
        assert "finished before this controller started" in refused["error"]
        assert "submit the project again" in refused["error"] and "done jobs are reused" in refused["error"]
        paused = subprocess.run([*FARM, "pause", "restarted", "--json", "--controller", again.url],
                                capture_output=True, text=True, timeout=120)
        assert "submit the project again to run it anew" in json.loads(paused.stdout)["error"]

        agents(again.url, 1)
        resubmitted = submit(again.url, project)  # what the message says to do
        assert resubmitted.reused == 5 and resubmitted.failed == 1  # only the failed job ran again
    finally:
        again.stop(shutdown_agents=True)
