"""The steering commands' words, as a user reads them: counts in the singular, every agent's
state in `farm status`, and `--json` errors as one object with no second copy on stderr."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import wait_for

from farm.client import Client
from farm.project import load_project
from farm.words import counted

FARM = [sys.executable, "-m", "farm"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Agents started here keep their file cache to this test (other tests' agents share ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def farm(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args, "--controller", url], capture_output=True, text=True, timeout=120)


def agent_line(url: str, agent: str) -> str:
    out = farm("status", url=url).stdout
    (line,) = [line for line in out.splitlines() if line.strip().startswith(agent + " ")]
    return line


def test_counted_says_one_in_the_singular():
    assert [counted(n, "job") for n in (0, 1, 2, 1234)] == ["0 jobs", "1 job", "2 jobs", "1,234 jobs"]
    assert counted(1, "entry", "entries") == "1 entry" and counted(2, "entry", "entries") == "2 entries"


def test_one_job_is_one_job_and_every_agent_says_its_state(controller, agents, synthetic):
    agents(controller.url, 1)
    with Client(controller.url) as client:
        failing = client.submit(
            load_project(
                synthetic(jobs=1, fail=["job-0000000"], name="failing", extra="[jobs]\nmax_attempts = 1\n")
            )
        )
        wait_for(lambda: client.project(failing)["state"] == "failed", 120, "the failing run to end")
        assert re.search(r"agent-0\s+\S+\s+active\s+0/1 busy", agent_line(controller.url, "agent-0"))
        retried = farm("retry", failing, "job-0000000", url=controller.url)
        assert retried.stdout.strip() == f"{failing}: retrying 1 job: job-0000000", retried
        wait_for(lambda: client.project(failing)["state"] == "failed", 120, "the retried run to end")

        slow = client.submit(load_project(synthetic(jobs=3, sleep=60, name="slow")))
        wait_for(lambda: client.project(slow)["running"] == 1, 120, "a job under way")
        drained = farm("drain", "agent-0", url=controller.url)
        assert drained.stdout.strip() == "agent agent-0: draining (1 job still finishing)", drained
        assert re.search(r"agent-0\s+\S+\s+draining\s+1/1 busy", agent_line(controller.url, "agent-0"))
        farm("undrain", "agent-0", url=controller.url)
        paused = farm("pause", slow, url=controller.url)
        assert paused.stdout.strip() == f"{slow}: paused (1 job still finishing)", paused
        client.cancel(slow)


def test_json_errors_are_one_object_and_nothing_on_stderr(controller):
    done = farm("pause", "nosuch", "--json", url=controller.url)
    assert done.returncode == 1
    (line,) = done.stdout.splitlines()
    assert json.loads(line) == {
        "error": "controller: no project 'nosuch'",
        "state": "failed",
        "code": "not_found",
    }
    assert "no project" not in done.stderr and "error" not in done.stderr, done.stderr
    text = farm("pause", "nosuch", url=controller.url)  # without --json: the sentence on stderr
    assert text.stdout == "" and "error: controller: no project 'nosuch'" in text.stderr
