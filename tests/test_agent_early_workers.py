"""Workers started before their agent (`farm.agent.pool.EarlyWorkers`, used by `farm.agent.local`):
the agent given them renders with those very processes, and an agent that cannot start lets
them and their scratch folder go."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from conftest import wait_for

from farm.agent.agent import Agent
from farm.agent.pool import EarlyWorkers
from farm.client import Client
from farm.controller.server import Controller
from farm.project import load_project


def test_an_agent_renders_with_the_workers_started_before_it(tmp_path: Path, synthetic) -> None:
    workers = EarlyWorkers(2, tmp_path / "scratch")
    started = [slot.proc.pid for slot in workers.pool.slots if slot.proc is not None]
    assert len(started) == 2  # running before any agent exists
    ctl = Controller(f"ipc://{tmp_path}/jobs", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4)
    ctl.start()
    agent = Agent(f"ipc://{tmp_path}/jobs", agent_id="early-1", heartbeat=0.5, liveness=4, workers=workers)
    assert agent.nslots == 2 and agent.scratch == workers.hold.path and agent.pool.outcomes is agent
    thread = threading.Thread(target=agent.run, name="early-1", daemon=True)
    thread.start()
    try:
        with Client(ctl.url or "", timeout=60) as client:
            run_id = client.submit(load_project(synthetic(jobs=8)))
            summary = client.follow(run_id)
        assert summary.ok and summary.done == 8
        # the same two processes ran them: none was replaced, none started late
        assert [slot.proc.pid for slot in agent.pool.slots if slot.proc is not None] == started
    finally:
        agent.stop()
        thread.join(30)
        ctl.stop(shutdown_agents=True)
    assert not thread.is_alive()
    assert all(slot.proc is None or slot.proc.poll() is not None for slot in workers.pool.slots)
    assert not workers.hold.path.exists()


def test_an_agent_that_cannot_start_stops_its_early_workers(tmp_path: Path) -> None:
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    # a name that is not an agent id: the agent refuses it after its workers have started
    done = subprocess.run(
        [sys.executable, "-P", "-m", "farm.agent.local", f"ipc://{tmp_path}/jobs", "--id", "../up",
         "--parent-pid", "1"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TMPDIR": str(scratch_parent)},
    )
    assert done.returncode == 1
    assert "agent id" in done.stderr and "../up" in done.stderr
    assert list(scratch_parent.iterdir()) == []  # its scratch folder (and the workers' socket) removed
