"""The controller's own state folder filling up (its journal, the staging of results) used to fail
every job "for good" after three quick attempts (staging a result is no render to retry), then end
the controller with a JournalError traceback while its submitters waited 10 minutes in silence;
a resubmit kept those jobs failed. Now the run stops once, no job blamed, its followers hear why
(the folder, the OS error, code "controller_disk"), the controller goes on serving, and a submit
once there is room renders the stopped jobs again. Real tmpfs mounts, real agents, real SQLite.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from agent_trust_helpers import AgentTmp
from conftest import Background, wait_for
from control_helpers import EventLog
from farm_synthetic import job_key

from farm.client import Client, submit
from farm.controller.server import Controller
from farm.project import load_project

SIZE = 96 * 1024  # a job's output: more than the staging mount below holds


def small_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its disk is full; the file, to remove for room again."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:  # and the last pages
            while True:
                out.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def outputs(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "output").iterdir())


@pytest.fixture
def state(tmp_path):
    folder = tmp_path / "state"
    yield folder
    unmount(folder / "staging")
    unmount(folder)


def assert_stopped_for_the_state_folder(summary, folder, ctl):
    assert summary.state == "failed", summary
    assert summary.failures == [] and summary.failed == 0, summary.failures  # no job blamed
    assert f"the controller's state folder {folder} cannot be written" in summary.error, summary.error
    assert "(ENOSPC)" in summary.error or "full" in summary.error, summary.error
    assert summary.code == "controller_disk", summary
    assert ctl.crash is None and ctl.wait(0), ctl.crash  # the controller goes on (still running)
    with Client(ctl.url) as client:  # and answers
        assert any(r["id"] == summary.id for r in client.status()["projects"]), client.status()


def test_a_full_staging_disk_stops_the_run_once_and_a_resubmit_renders_it(state, agents, synthetic):
    small_tmpfs(state / "staging", "64k")
    jobs = 4
    project = synthetic(jobs=jobs, sleep=0.05, output_bytes=SIZE, render_log="renders.log")
    ctl = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4).start()
    agent_tmp = AgentTmp()
    try:
        events = EventLog(ctl)
        agents(ctl.url, 1, slots=2, env=agent_tmp.env)
        run = Background(ctl.url, project)
        wait_for(run.done, 120, "the run")
        assert run.error is None, run.error
        assert_stopped_for_the_state_folder(run.summary, state, ctl)
        events.settled()
        assert not events.of("job.retried") and not events.of("job.failed"), events.events
        renders = Counter(agent_tmp.lines("renders.log"))
        assert max(renders.values()) == 1, renders  # nothing rendered again for the controller's disk
        with sqlite3.connect(ctl.journal.path) as db:
            assert db.execute("SELECT count(*) FROM jobs WHERE state = 'failed'").fetchone()[0] == 0
        unmount(state / "staging")  # room again
        again = submit(ctl.url, load_project(project))
        assert again.state == "done" and again.done == jobs and again.failed == 0, again
        assert outputs(project) == [f"{job_key(i)}.bin" for i in range(jobs)]
    finally:
        ctl.stop(shutdown_agents=True)
        agent_tmp.close()


def test_a_full_journal_disk_stops_the_runs_and_the_controller_goes_on(state, agents, synthetic):
    small_tmpfs(state, "32m")
    jobs = 40
    project = synthetic(jobs=jobs, sleep=0.1, output_bytes=16, render_log="renders.log")
    ctl = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4).start()
    agent_tmp = AgentTmp()
    try:
        events = EventLog(ctl)
        agents(ctl.url, 1, slots=1, env=agent_tmp.env)
        run = Background(ctl.url, project)
        wait_for(lambda: len(events.of("job.done")) >= 2, 120, "two jobs done")
        filler = fill(state)
        wait_for(run.done, 120, "the run")
        assert run.error is None, run.error  # an answer, not a silent wait for a restart
        assert_stopped_for_the_state_folder(run.summary, state, ctl)
        assert run.summary.done < jobs, run.summary
        events.settled()
        assert not events.of("job.failed"), events.events
        filler.unlink()  # room again: the same controller renders the rest
        again = submit(ctl.url, load_project(project))
        assert again.state == "done" and again.failed == 0 and again.error is None, again
        assert outputs(project) == [f"{job_key(i)}.bin" for i in range(jobs)]
    finally:
        ctl.stop(shutdown_agents=True)
        agent_tmp.close()
    assert ctl.crash is None, ctl.crash
    assert os.path.exists(state / "journal.sqlite")
