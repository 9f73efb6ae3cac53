"""A run resumed after a controller restart counts the units of its jobs done before it at once,
not when `split` reaches them again: a paused run shows them too (it pulls nothing)."""

from __future__ import annotations

import pytest
from conftest import wait_for

from farm.client import Client
from farm.controller.server import Controller
from farm.project import load_project


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Agents started here keep their file cache to this test (other tests' agents share ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_a_paused_resumed_run_shows_its_done_and_failed_units(tmp_path, agents, synthetic):
    url = f"ipc://{tmp_path}/ctl.sock"
    first = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    try:
        agents(url, 1)
        project = synthetic(
            jobs=30, sleep=0.1, units_per_job=[2, 3], fail=["job-0000001"], extra="[jobs]\nmax_attempts = 1\n"
        )
        with Client(url) as client:
            run = client.submit(load_project(project))
            wait_for(lambda: client.project(run)["done"] >= 6, 120, "some jobs done")
            client.pause(run)
            wait_for(lambda: client.project(run)["running"] == 0, 60, "the jobs in flight")
    finally:
        first.stop()
    second = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    try:
        with Client(url) as client:
            snap = client.project(run)
        assert snap["paused"] is True and snap["resumed"] == snap["done"] >= 6
        resumed = second.runs[run]
        done_units = sum(2 if int(key[-7:]) % 2 == 0 else 3 for key in resumed.done_keys)
        units = snap["units"]
        assert (units["done"], units["failed"], units["total"]) == (done_units, 3, 75), units
        # resumed and finished, the counts still add up: nothing counted twice
        with Client(url) as client:
            client.resume(run)
            wait_for(lambda: client.project(run)["state"] == "failed", 120, "the run to end")
            final = client.project(run)["units"]
        assert (final["done"], final["failed"]) == (72, 3), final
    finally:
        second.stop(shutdown_agents=True)
