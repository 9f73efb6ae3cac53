"""What a run resumed after a controller restart says about the work done before it: the units
its done jobs hold (an adaptive media type's jobs were cut at sizes a plain split does not
name), nothing left to wait for when every job was done (a controller killed while it
finalized), and the attempt the restart cut short counted in the job's log.

Real SQLite journals, a real controller (ZeroMQ, its loop) read through a real client.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from conftest import wait_for

from farm.client import Client
from farm.controller.server import JOURNAL_FILE, Controller
from farm.journal import Journal
from farm.project import load_project


def frames_project(folder: Path, frames: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scene.py").write_text("import bpy\n")
    (folder / "farm.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "fr40"
        media_type = "frames"
        [frames]
        scene = "scene.py"
        frames = "{frames}"
        """))
    return folder


def seeded(state: Path, project, done: list[tuple[int, int]], running: list[tuple[int, int]] = ()) -> None:
    """A journal as a controller killed mid-run left it: the run unfinished, these chunks done
    (cut at the sizes its timing chose), these leased and rendering."""
    state.mkdir(parents=True, exist_ok=True)
    with Journal(state / JOURNAL_FILE) as journal:
        journal.add_project("run-1", project.to_wire(), 0, 0.0)
        for first, last in done:
            journal.job_done("run-1", f"frames-{first:06d}-{last:06d}", {"frames": last - first + 1})
        for n, (first, last) in enumerate(running):
            journal.job_started("run-1", f"frames-{first:06d}-{last:06d}", f"lease{n}", "agent-a")
        journal.flush()


def test_a_run_killed_while_finalizing_resumes_with_all_its_units_and_waits_for_no_agent(tmp_path):
    project = load_project(frames_project(tmp_path / "p", "1-40"))
    seeded(tmp_path / "state", project, [(1, 8), (9, 20), (21, 40)])  # every frame done, in 3 chunks
    url = f"ipc://{tmp_path}/ctl.sock"
    controller = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    try:
        with Client(url) as client:
            snap = client.project("run-1")
            # no agent: before the fix it waited for one to pull the done jobs again
            wait_for(lambda: client.project("run-1")["state"] not in ("running", "finalizing"), 60,
                     "the resumed run to finish without agents")
            final = client.project("run-1")
    finally:
        controller.stop()
    assert snap["stalled"] is None, snap
    assert (snap["units"]["done"], snap["units"]["total"]) == (40, 40), snap["units"]
    assert (final["done"], final["total"]) == (3, 3), final
    assert (final["units"]["done"], final["units"]["total"]) == (40, 40), final["units"]


def test_a_resumed_run_counts_done_chunks_of_any_size(tmp_path):
    project = load_project(frames_project(tmp_path / "p", "1-40"))
    seeded(tmp_path / "state", project, [(1, 8), (9, 20)])
    url = f"ipc://{tmp_path}/ctl.sock"
    controller = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    try:
        with Client(url) as client:
            snap = client.project("run-1")
    finally:
        controller.stop()
    assert (snap["units"]["done"], snap["units"]["total"]) == (20, 40), snap["units"]
    assert snap["state"] == "running" and snap["stalled"] == "no agents connected yet", snap


def test_the_attempt_a_controller_kill_cut_short_counts(tmp_path, agents, synthetic, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # this test's agent's own file cache
    project = load_project(synthetic(jobs=3, sleep=0.0))
    state = tmp_path / "state"
    state.mkdir()
    with Journal(state / JOURNAL_FILE) as journal:  # as a controller killed mid-render left it
        journal.add_project("run-1", project.to_wire(), 0, 0.0)
        journal.job_done("run-1", "job-0000000", None)
        journal.job_started("run-1", "job-0000001", "lease-gone", "agent-old")
        journal.flush()
    url = f"ipc://{tmp_path}/ctl.sock"
    controller = Controller(url, state_dir=state, heartbeat=0.5, liveness=4).start()
    try:
        agents(url, 1)
        with Client(url) as client:
            wait_for(lambda: client.project("run-1")["state"] == "done", 120, "the resumed run to end")
            jobs = {job["key"]: job for job in client.jobs("run-1")["jobs"]}
            log = client.job_log("run-1", "job-0000001")
    finally:
        controller.stop(shutdown_agents=True)
    # the interrupted try and the one after the restart, as after a lost agent (and in its log)
    assert jobs["job-0000001"]["attempts"] == 2, jobs
    assert jobs["job-0000002"]["attempts"] == 1, jobs
    assert [a["state"] for a in log["attempts"]] == ["lost", "done"], log
    assert "lease-gone" in log["attempts"][0]["error"], log
