"""The controller's own state folder filling up (its journal, the staging of results) used to fail
every job "for good" after three quick attempts (staging a result is no render to retry), then end
the controller with a JournalError traceback while its submitters waited 10 minutes in silence;
a resubmit kept those jobs failed. Now the run stops once, no job blamed, its followers hear why
(the folder, the OS error, code "controller_disk"), the controller goes on serving, and a submit
once there is room renders the stopped jobs again. Real tmpfs mounts, real agents, real SQLite.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from agent_trust_helpers import AgentTmp
from conftest import Background, wait_for
from control_helpers import EventLog
from farm_synthetic import job_key

from farm.client import Client, submit
from farm.controller.server import Controller
from farm.embedded import EmbeddedFarm
from farm.errors import FarmError
from farm.journal import Journal, JournalError
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
        shown = [r for r in client.status()["projects"] if r["id"] == summary.id]
        assert shown and shown[0]["code"] == "controller_disk", client.status()  # farm status --json too


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


def test_a_tile_that_does_not_fit_leaves_no_empty_file(tmp_path):
    """A map collate on a full disk left a 0-byte tile (opened, then its write refused)."""
    pytest.importorskip("mapnik")
    from farm_maptiles.mediatype import _write_tile

    output = tmp_path / "output"
    small_tmpfs(output, "64k")
    try:
        fill(output)
        with pytest.raises(OSError) as refused:
            _write_tile(output / "26.png", b"\x89PNG" * 4096)
        assert refused.value.errno == errno.ENOSPC
        assert not (output / "26.png").exists()
    finally:
        unmount(output)


def farm_submit_json(project: Path) -> tuple[int, dict, str]:
    done = subprocess.run([sys.executable, "-m", "farm", "submit", "--agents", "1", "--json", str(project)],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads(done.stdout), done.stderr


def test_an_embedded_run_on_a_full_disk_says_why_and_a_resubmit_completes(tmp_path, synthetic):
    """`farm submit --json` of a project on a full disk: the cause and its code, not "no answer"."""
    jobs = 12  # their outputs: more than the disk holds
    made = synthetic(jobs=jobs, output_bytes=SIZE)
    project = tmp_path / "small"
    small_tmpfs(project, "1m")
    try:
        shutil.copytree(made, project, dirs_exist_ok=True)
        code, answer, stderr = farm_submit_json(project)
        assert code != 0 and answer["state"] == "failed", answer
        assert "no answer" not in answer["error"] and "crashed" not in stderr, (answer, stderr)
        assert "cannot be written" in answer["error"] and "(ENOSPC)" in answer["error"], answer
        assert answer["code"] == "controller_disk" and answer["failures"] == [], answer
        assert not [p for p in (project / "output").rglob("*") if p.stat().st_size == 0]
        subprocess.run(["mount", "-o", "remount,size=8m", str(project)], check=True)  # room, the same command
        code, answer, stderr = farm_submit_json(project)
        assert code == 0 and answer["state"] == "done" and answer["jobs"]["done"] == jobs, (answer, stderr)
        assert answer["jobs"]["failed"] == 0, answer
        assert outputs(project) == [f"{job_key(i)}.bin" for i in range(jobs)]
    finally:
        unmount(project)


def test_an_embedded_controller_that_crashes_is_named_as_the_cause(tmp_path, synthetic, monkeypatch):
    """Its submitter used to end with "no answer from the controller ... for 15s", the cause unsaid."""
    project = load_project(synthetic(jobs=2))
    tick = Journal.tick

    def fails(journal, now=None):
        if journal.path.parent == tmp_path / "state":
            raise JournalError(f"journal {journal.path}: cannot commit: the file was replaced")
        return tick(journal, now)

    monkeypatch.setattr(Journal, "tick", fails)
    with EmbeddedFarm(tmp_path / "state", agents=1) as farm:
        with pytest.raises(FarmError) as stopped:
            farm.submit(project)
    assert "the embedded controller stopped" in str(stopped.value), stopped.value
    assert "cannot commit: the file was replaced" in str(stopped.value), stopped.value


def test_a_finalize_on_a_full_output_disk_names_the_folder(controller, agents, synthetic):
    """It said "finalize failed: OSError: [Errno 28] ...", as a plugin bug would, with a traceback."""
    project = synthetic(jobs=2, report=True)  # finalize writes outcome.json; the jobs write nothing
    output = project / "output"
    small_tmpfs(output, "64k")
    agent_tmp = AgentTmp()
    try:
        fill(output)
        agents(controller.url, 1, env=agent_tmp.env)
        summary = submit(controller.url, load_project(project))
    finally:
        unmount(output)
        agent_tmp.close()
    assert summary.state == "failed" and summary.done == 2 and summary.failures == [], summary
    assert f"cannot write the output folder {output}" in summary.error, summary.error
    assert "(ENOSPC)" in summary.error and "finalizing" in summary.error, summary.error
    assert summary.code == "controller_disk", summary
