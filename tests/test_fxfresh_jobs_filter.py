"""`farm jobs P --state failed` said "N jobs not split off yet (not listed)", which is no failed job;
and `farm jobs P --state bogus` exited 1 with the controller's ``bad_request`` where every other bad
option value is a usage error (exit 2, ``usage``). The controller still refuses it, ``bad_request``.

A real controller, a real agent process, the real `farm jobs` command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import wait_for

from farm.client import Client
from farm.errors import ControlError
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


def test_farm_jobs_states_checked_here_and_unsplit_jobs_said_only_where_they_belong(
        tmp_path, controller, agents, synthetic):
    env = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")

    def farm_jobs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FARM, "jobs", *args, "--controller", controller.url], env=env,
                              capture_output=True, text=True, timeout=120)

    project = synthetic(jobs=1500, sleep=0.2, fail=["job-0000000"], extra="[jobs]\nmax_attempts = 1\n")
    with Client(controller.url, timeout=30) as client:
        run = client.submit(load_project(project))
        agents(controller.url, 1)
        wait_for(lambda: client.project(run)["failed"], 120, "the first job to fail")
        client.pause(run)
        assert client.jobs(run)["unlisted"] > 0  # most are not split off yet
        with pytest.raises(ControlError) as refused:  # a client that does not check: the controller does
            client.jobs(run, state="bogus")
        assert refused.value.code == "bad_request", refused.value

        every = farm_jobs(run)
        assert every.returncode == 0 and "not split off yet (not listed)" in every.stdout, every
        # the header counts the run's jobs, not only the listed ones (it said "jobs 1-100 of 102")
        header = every.stdout.splitlines()[0]
        assert re.fullmatch(rf"{run}: jobs 1-\d+ of 1,500 \([\d,]+ not split off yet\)", header), header
        page = json.loads(farm_jobs(run, "--json").stdout)  # --json: the API's page, both counts
        assert page["total"] + page["unlisted"] == 1500 and page["unlisted"] > 0, page
        failed = farm_jobs(run, "--state", "failed")
        assert failed.returncode == 0, failed
        assert "job-0000000" in failed.stdout and "not split off yet" not in failed.stdout, failed.stdout
        queued = farm_jobs(run, "--state", "queued")  # they wait to be queued: said there
        assert "not split off yet (not listed)" in queued.stdout, queued.stdout

    bogus = farm_jobs(run, "--state", "bogus")
    # before: exit 1, "error: controller: unknown job state 'bogus' ..."
    assert bogus.returncode == 2, bogus
    assert "Invalid value for '--state': 'bogus' is not a job state" in bogus.stderr, bogus.stderr
    as_json = farm_jobs(run, "--state", "bogus", "--json")
    assert as_json.returncode == 2, as_json
    said = json.loads(as_json.stdout)
    assert said["code"] == "usage" and said["error"].endswith(
        "'bogus' is not a job state (one of running, collating, queued, failed, done, reused)"), said
