"""Prefetch is sized from how long jobs take, never from how fast they failed."""

from __future__ import annotations

import pytest
from conftest import wait_for

from farm.client import Client
from farm.project import load_project


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_fast_failures_do_not_make_long_jobs_queue_on_a_busy_agent(controller, agents, synthetic):
    agents(controller.url, 1)  # one slot
    with Client(controller.url) as client:
        failing = client.submit(load_project(synthetic(jobs=4, fail=[f"job-000000{i}" for i in range(4)],
                                                       name="failing", extra="[jobs]\nmax_attempts = 1\n")))
        wait_for(lambda: client.project(failing)["state"] == "failed", 120, "the failing run to end")
        slow = client.submit(load_project(synthetic(jobs=3, sleep=60, name="slow")))
        wait_for(lambda: client.project(slow)["running"] >= 1, 120, "a job under way")
        # leases are handed out in one dispatch turn: had the fast failures set a job time, the
        # one-slot agent would hold all three 60 s jobs now, and the others could not have them
        assert client.project(slow)["running"] == 1
        client.cancel(slow)
