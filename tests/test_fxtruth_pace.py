"""What a run's progress says about its pace when nothing moves: agents that came and went are
not "yet" to come, a run no agent can take has no rate or ETA (in `farm status` and `farm
submit` alike), and failures are no pace (a run with nothing done has no rate, no ETA).

A real controller, real agent processes (one killed), read through a real client.
"""

from __future__ import annotations

import pytest
from conftest import wait_for

from farm.cli.progress import progress_text
from farm.cli.status import status_text
from farm.client import Client
from farm.controller.server import Controller
from farm.project import load_project


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Agents started here keep their file cache to this test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_agents_gone_say_so_and_a_run_none_can_take_has_no_pace(tmp_path, agents, synthetic):
    url = f"ipc://{tmp_path}/ctl.sock"
    controller = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=3).start()
    try:
        (agent,) = agents(url, 1)
        project = synthetic(jobs=40, sleep=0.2, units_per_job=[3])
        with Client(url) as client:
            run = client.submit(load_project(project))
            wait_for(lambda: client.project(run)["done"] >= 4, 120, "some jobs done")
            agent.kill()
            agent.wait()
            wait_for(lambda: client.project(run)["stalled"] is not None, 60, "the run to wait for agents")
            snap = client.project(run)
            report = client.status()
    finally:
        controller.stop()
    assert snap["stalled"].startswith("no agents connected (1 left, the last at "), snap["stalled"]
    assert "yet" not in snap["stalled"]
    assert (snap["rate"], snap["eta_s"], snap["units"]["rate"], snap["units"]["eta_s"]) == (None,) * 4, snap
    line = next(li for li in status_text(report).splitlines() if run in li)
    assert "/s" not in line and "ETA" not in line, line
    text = progress_text(snap, 2.0)  # whatever pace the submitter last measured
    assert "-- items/s · ETA --:--" in text and "waiting: no agents connected (1 left" in text, text


def test_a_run_with_nothing_done_has_no_rate_and_no_eta(tmp_path, agents, synthetic):
    url = f"ipc://{tmp_path}/ctl.sock"
    controller = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    try:
        agents(url, 1)
        project = synthetic(jobs=1, sleep=0.7, units_per_job=[12], fail=["job-0000000"],
                            extra="[jobs]\nmax_attempts = 1\n")
        with Client(url) as client:
            run = client.submit(load_project(project))
            wait_for(lambda: client.project(run)["state"] == "failed", 120, "the run to fail")
            snap = client.project(run)
    finally:
        controller.stop(shutdown_agents=True)
    assert snap["units"]["failed"] == 12 and snap["units"]["done"] == 0, snap["units"]
    assert snap["units"]["rate"] is None and snap["rate"] is None, snap
    text = progress_text(snap, None)
    assert "-- items/s · ETA --:--" in text and "1 failed" in text, text
