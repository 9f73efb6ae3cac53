"""Progress in the media's own units: the plugins' counts, the controller's snapshots, and
`progress` events announced only when something changed."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import textwrap
from pathlib import Path

import pytest
from conftest import Background, wait_for

from farm.client import Client, submit
from farm.controller.server import Controller
from farm.controller.units import ProgressGate, UnitCounter
from farm.mediatype import Job, MediaType
from farm.plugins import get_media_type
from farm.project import Project, load_project

SAMPLE = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"



@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Agents started here keep their file cache to this test (other tests' agents share ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

def end(controller, run: Background, run_id: str) -> None:
    """Cancel a run that waits for agents, and see its submitter return."""
    with Client(controller.url) as client:
        client.cancel(run_id)
    run.thread.join(30)
    assert run.summary is not None and run.summary.state == "cancelled"


def project_with(media_type: str, settings: dict) -> Project:
    """A project as the controller holds it after `configure` (settings given directly)."""
    return Project(root=Path("/nonexistent"), name="p", media_type=media_type, settings=settings)


# -- the plugins' counts: every job's units add up to the project's total --------------------------------


@pytest.mark.parametrize("settings", [
    {"frames": [[1, 10]], "chunk": 4},
    {"frames": [[1, 10], [20, 25], [100, 100]], "chunk": 3},
    {"frames": [[5, 5]], "chunk": 10},
])
def test_frames_units_are_the_frames_of_each_chunk(settings):
    media = get_media_type("frames")
    project = project_with("frames", settings)
    jobs = list(media.split(project))
    assert media.unit == "frames"
    assert [media.units(j, project) for j in jobs] == [
        sum(b - a + 1 for a, b in j.params["runs"]) for j in jobs]
    assert sum(media.units(j, project) for j in jobs) == media.total_units(project) == sum(
        b - a + 1 for a, b in settings["frames"])


@pytest.mark.parametrize(("samples", "segment", "loudnorm"), [
    (48000 * 7 + 13, 48000 * 2, None),
    (48000 * 7 + 13, 48000 * 2, -16),  # the analysis job holds no audio
    (1000, 48000, None),  # one short segment
])
def test_audio_units_are_seconds_of_each_segment(samples, segment, loudnorm):
    media = get_media_type("audio")
    project = project_with("audio", {"samples": samples, "segment": segment, "lead_in": 0, "lead_out": 0,
                                     "sample_rate": 48000, "loudnorm": loudnorm, "input": "in.wav"})
    units = [media.units(j, project) for j in media.split(project)]
    assert media.unit == "seconds"
    assert (units[0] == 0.0) is (loudnorm is not None)
    assert sum(units) == pytest.approx(media.total_units(project)) == pytest.approx(samples / 48000)


@pytest.mark.parametrize("table", [
    'zoom = "0-3"',
    'zoom = "3-5"\nbbox = [-10.0, 35.0, 30.0, 60.0]',  # metatiles cut by the bbox
    'zoom = "6"\nbbox = [2.2, 48.8, 2.5, 48.9]\nmetatile = 2',
])
def test_maptiles_units_are_the_tiles_inside_the_bbox(tmp_path, table):
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(SAMPLE / "world.xml", folder / "world.xml")
    shutil.copytree(SAMPLE / "data", folder / "data")
    (folder / "farm.toml").write_text(f'[project]\nname = "w"\nmedia_type = "maptiles"\n[maptiles]\n'
                                      f'style = "world.xml"\n{table}\n')
    project = load_project(folder, renderer_checks=False)
    media = get_media_type("maptiles")
    tiles = [media.units(j, project) for j in media.split(project)]
    assert media.unit == "tiles" and all(t >= 1 for t in tiles)
    assert sum(tiles) == media.total_units(project)


def test_a_media_type_without_units_counts_jobs():
    class Plain(MediaType):
        name = "plain"

        def count(self, project):
            return 7

    media, project = Plain(), project_with("plain", {})
    assert media.unit == "jobs" and media.units(Job("a"), project) == 1.0 and media.total_units(project) == 7


def test_a_plugin_with_bad_units_costs_the_units_not_the_run(caplog):
    class Broken(MediaType):
        name = "broken"
        unit = "widgets"

        def units(self, job, project):
            return {"a": float("nan"), "b": -1, "c": "many"}.get(job.key) or 1 / 0

        def total_units(self, project):
            raise RuntimeError("no idea")

    counter = UnitCounter(Broken(), project_with("broken", {}))
    for key in "abcd":
        counter.seen(Job(key))
        counter.job_done(key)
    snap = counter.snapshot({}, 2.0, exhausted=True, active=False)
    assert snap["name"] == "widgets" and snap["done"] == 0 and snap["total"] == 0
    assert len([r for r in caplog.records if "approximate" in r.message]) == 1  # once, not per job


def test_units_of_a_failed_job_move_to_done_when_it_is_retried_by_hand():
    media = get_media_type("synthetic")
    project = project_with("synthetic", {"jobs": 3, "units_per_job": [2.0], "depend_on_first": False,
                                         "inputs": ""})
    counter = UnitCounter(media, project)
    for job in media.split(project):
        counter.seen(job)
    counter.job_failed("job-0000001")
    counter.job_failed("job-0000001")  # counted once
    counter.job_done("job-0000000")
    snap = counter.snapshot({"job-0000002": 0.5}, 1.0, exhausted=True, active=True)
    assert (snap["done"], snap["failed"], snap["partial"], snap["total"]) == (2, 2, 1, 6)
    # a pace from done and part-done units: the failed ones are no throughput
    assert snap["rate"] == 3 and snap["eta_s"] == pytest.approx(0.3)
    counter.job_done("job-0000001")
    assert counter.snapshot({}, 1.0, exhausted=True, active=True)["failed"] == 0


# -- the controller's snapshots and events -------------------------------------------------------------


def test_synthetic_units_in_snapshots_events_and_summary(controller, agents, synthetic):
    seen: list = []
    controller.events.observe(seen.append)
    agents(controller.url, 2)
    project = synthetic(jobs=12, sleep=0.05, units_per_job=[1, 2.5], fail=["job-0000003"],
                        extra="[jobs]\nmax_attempts = 1\n")
    updates: list[dict] = []
    summary = submit(controller.url, load_project(project), on_update=updates.append)
    assert summary.failed == 1
    assert controller.events.drain(10)
    total = 6 * 1 + 6 * 2.5
    final = updates[-1]["units"]  # the last UPDATE before FINISHED has the final counts
    assert final == {"name": "items", "done": total - 2.5, "failed": 2.5, "partial": 0, "total": total,
                     "rate": final["rate"], "eta_s": None}
    assert final["rate"] > 0
    assert all(u["units"]["total"] == total and u["units"]["name"] == "items" for u in updates)
    dones = [u["units"]["done"] for u in updates]
    assert dones == sorted(dones)
    finished = next(e for e in seen if e.type == "run.finished")
    assert finished.data["units"]["done"] == total - 2.5 and finished.data["project"] == "synth"
    progress = [e.data for e in seen if e.type == "progress"]
    assert progress[-1]["state"] == "failed" and progress[-1]["units"]["done"] == total - 2.5


def test_reused_jobs_count_as_done_units(controller, agents, synthetic):
    agents(controller.url, 1)
    project = synthetic(jobs=6, cache=True, units_per_job=[3])
    assert submit(controller.url, load_project(project)).ok
    updates: list[dict] = []
    again = submit(controller.url, load_project(project), on_update=updates.append)
    assert again.ok and again.reused == 6
    assert updates[-1]["units"]["done"] == updates[-1]["units"]["total"] == 18


def test_jobs_done_before_a_controller_restart_count_as_done_units(tmp_path, agents, synthetic):
    url = f"ipc://{tmp_path}/ctl.sock"  # the same address after the restart: the agents come back
    first = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    agents(url, 2)
    run = Background(url, synthetic(jobs=40, sleep=0.05, units_per_job=[2]))
    wait_for(lambda: first.stats["collated"] >= 10, 120, "some jobs done")
    first.stop()
    second = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    try:
        resumed = wait_for(lambda: next(iter(second.runs.values()), None), 60, "the resumed run")
        assert resumed.resumed >= 10
        wait_for(lambda: resumed.state == "done", 120, "the resumed run to finish")
        units = resumed.snapshot()["units"]
        assert units["done"] == units["total"] == 80
        assert resumed.units.resumed == 2 * resumed.resumed  # counted, but not in this run's rate
    finally:
        second.stop(shutdown_agents=True)
    run.thread.join(30)


def test_maptiles_units_in_a_real_run_are_the_tiles_written(controller, agents, tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    shutil.copy(SAMPLE / "world.xml", folder / "world.xml")
    shutil.copytree(SAMPLE / "data", folder / "data")
    (folder / "farm.toml").write_text(textwrap.dedent("""\
        [project]
        name = "w"
        media_type = "maptiles"
        [maptiles]
        style = "world.xml"
        zoom = "2-4"
        metatile = 2
        bbox = [-10.0, 35.0, 30.0, 60.0]
        """))
    agents(controller.url, 2)
    updates: list[dict] = []
    summary = submit(controller.url, load_project(folder), on_update=updates.append)
    assert summary.ok, summary.failures
    tiles = list((folder / "output" / "tiles").rglob("*.png"))
    with sqlite3.connect(folder / "output" / "w.mbtiles") as db:
        assert db.execute("SELECT count(*) FROM tiles").fetchone()[0] == len(tiles)
    units = updates[-1]["units"]
    assert units["name"] == "tiles" and units["done"] == units["total"] == len(tiles)
    assert summary.total < len(tiles)  # more tiles than jobs: the units say something jobs do not
    assert all(u["units"]["total"] == len(tiles) for u in updates)


def test_status_shows_units(controller, synthetic):
    run = Background(controller.url, synthetic(jobs=4, units_per_job=2))  # no agents: it waits
    wait_for(lambda: controller.status()["projects"], 60, "the run")
    project = controller.status()["projects"][0]
    assert project["units"] == {"name": "items", "done": 0, "failed": 0, "partial": 0, "total": 8,
                                "rate": None, "eta_s": None}
    end(controller, run, project["id"])


# -- progress events only on change --------------------------------------------------------------------


def test_progress_gate_lets_through_changes_and_keepalives():
    gate = ProgressGate(keepalive=5.0)
    snap = {"done": 1, "elapsed_s": 1.0, "rate": 2.0, "eta_s": 3.0, "stalled": None,
            "units": {"name": "tiles", "done": 4, "rate": 1.0, "eta_s": 9.0}}
    assert gate.changed("r", snap, 100.0)
    clock_only = {**snap, "elapsed_s": 1.2, "rate": 2.1, "eta_s": 2.9,
                  "units": {**snap["units"], "rate": 1.1, "eta_s": 8.0}}
    assert not gate.changed("r", clock_only, 100.2)
    assert gate.changed("other", snap, 100.2)  # per run
    moved = {**snap, "units": {**snap["units"], "done": 5}}
    assert gate.changed("r", moved, 100.4)
    stalled = {**moved, "stalled": "no agents"}
    assert gate.changed("r", stalled, 100.6)
    assert not gate.changed("r", stalled, 105.5)
    assert gate.changed("r", stalled, 105.7)  # a keep-alive
    gate.forget("r")
    assert gate.changed("r", clock_only, 105.8)


def test_an_unchanged_run_is_announced_only_as_a_keepalive(controller, synthetic):
    controller.progress_gate.keepalive = 0.6
    run = Background(controller.url, synthetic(jobs=3))  # no agents: nothing changes
    wait_for(lambda: len([e for e in controller.events.buffer if e.type == "progress"]) >= 4, 60,
             "four progress events")
    progress = [e for e in controller.events.buffer if e.type == "progress"]
    same = [(a, b) for a, b in itertools.pairwise(progress)
            if {k: v for k, v in a.data.items() if k not in ("elapsed_s", "rate", "eta_s")}
            == {k: v for k, v in b.data.items() if k not in ("elapsed_s", "rate", "eta_s")}]
    assert same, [e.data for e in progress]
    # snapshots go out every 0.2 s; an unchanged one became an event only after the keep-alive
    assert all(b.time - a.time >= 0.55 for a, b in same), [(a.time, b.time) for a, b in same]
    end(controller, run, progress[0].run)


def test_a_cancelled_run_keeps_no_partial_progress(controller, agents, synthetic):
    """A cancelled map kept its running jobs' partial tiles in `partial` (a fresh user saw 640)."""
    agents(controller.url, 1)
    with Client(controller.url) as client:
        run_id = client.submit(load_project(synthetic(jobs=4, sleep=30, units_per_job=[10])))
        wait_for(lambda: client.project(run_id)["running"] == 1, 60, "a job running")
        run = controller.runs[run_id]
        (key,) = run.leases
        run.progress[key] = 0.5  # as the agent's PROGRESS for it would say
        assert client.project(run_id)["units"]["partial"] == 5
        client.cancel(run_id)
        snap = client.project(run_id)
    assert snap["state"] == "cancelled" and snap["partial"] == 0 and snap["units"]["partial"] == 0, snap


def test_units_of_jobs_done_together_are_those_of_each_done_by_itself():
    """`UnitCounter.jobs_done` (a RESULTS message's group) leaves the sums `job_done` for each leaves,
    a job failed for good and done after a retry by hand among them, and one never seen."""
    media = get_media_type("synthetic")
    project = project_with("synthetic", {"jobs": 9, "units_per_job": [0.1, 0.7, 2.5],
                                         "depend_on_first": False, "inputs": ""})
    counters = [UnitCounter(media, project) for _ in range(2)]
    for counter in counters:
        for job in media.split(project):
            counter.seen(job)
        counter.job_failed("job-0000004")
    keys = ["job-0000003", "job-0000004", "job-0000000", "never", "job-0000008", "job-0000001"]
    counters[0].jobs_done(keys)
    for key in keys:
        counters[1].job_done(key)
    together, alone = ((c.done, c.failed, c.pending, c.failed_keys) for c in counters)
    assert together == alone
    assert together[1] == 0 and together[0] == alone[0] > 0
