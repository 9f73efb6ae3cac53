"""Progress that says what is done: a resubmit's reused jobs waiting for their collate count
nothing yet (they read as 100 % with one job of 400 done), the line never says 100 % before the
jobs are done, a paused run has no ETA anywhere (its units' ``eta_s`` had one), and a finished
run shows its average rate (not the 0.0 of its last seconds) and counts with separators."""

from __future__ import annotations

import threading

import pytest
from conftest import Background, wait_for
from farm_synthetic import Synthetic
from http_helpers import web  # noqa: F401 (a fixture)

from farm.cli.progress import ProgressBar, progress_text
from farm.cli.status import status_text
from farm.client import Client, submit
from farm.project import load_project


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Agents started here keep their file cache to this test (other tests' agents share ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_reused_jobs_being_collated_count_no_units_until_done(controller, agents, synthetic, monkeypatch):
    agents(controller.url, 1)
    project = synthetic(jobs=6, cache=True, units_per_job=[3], output_bytes=16)  # files: the collate thread
    assert submit(controller.url, load_project(project)).ok
    release = threading.Event()
    collate = Synthetic.collate

    def held(media, job, result, outputs, ctx):  # the collator thread waits: every reused job queues
        assert release.wait(120), "never released"
        collate(media, job, result, outputs, ctx)

    monkeypatch.setattr(Synthetic, "collate", held)
    try:
        again = Background(controller.url, project)
        wait_for(lambda: any(r.state == "running" for r in controller.runs.values()), 60, "the second run")
        run = next(r for r in controller.runs.values() if r.state == "running")
        wait_for(lambda: run.exhausted and len(run.collating) == 6, 60, "every job reused, none collated")
        with Client(controller.url) as client:
            snap = client.project(run.id)
        assert (snap["done"], snap["collating"], snap["partial"]) == (0, 6, 0), snap
        assert (snap["units"]["done"], snap["units"]["partial"], snap["units"]["total"]) == (0, 0, 18), snap
        assert progress_text(snap, None).startswith("items 0/18 · jobs 0/6 · "), progress_text(snap, None)
    finally:
        release.set()
    wait_for(again.done, 60, "the second run")
    assert again.summary is not None and again.summary.ok and again.summary.reused == 6


def test_the_line_is_never_at_100_percent_before_the_jobs_are_done():
    """Rendered jobs being collated count whole in `partial` (the bar must not go back): a backlog
    of collates on the controller fills it, and the line stays short of the end until they are done."""
    backlog = {"project": "world", "state": "running", "total": 12, "done": 2, "failed": 0, "reused": 0,
               "partial": 10.0, "collating": 10, "stalled": None,
               "units": {"name": "tiles", "done": 228, "failed": 0, "partial": 1137, "total": 1365}}
    line = ProgressBar(enabled=False).line(backlog, now=0.0)
    assert line.startswith("tiles 1,364/1,365 · jobs 2/12 · "), line
    plain = []
    ProgressBar(_Lines(plain))._plain(backlog, line, 0.0)
    assert plain == [f"world: {line.replace(' · ', ' (99%) · ', 1)}\n"], plain
    last = {**backlog, "done": 11, "partial": 1.0, "units": {**backlog["units"], "done": 1364, "partial": 1}}
    assert ProgressBar(enabled=False).line(last, now=0.0).startswith("tiles 1,364/1,365 · jobs 11/12")
    jobs_only = {**backlog, "units": None}  # a media type without units of its own: the same for jobs
    assert progress_text(jobs_only, None).startswith("jobs 11/12 · "), progress_text(jobs_only, None)
    done = {**backlog, "done": 12, "partial": 0.0, "collating": 0, "state": "done",
            "units": {**backlog["units"], "done": 1365, "partial": 0}}
    plain.clear()
    ProgressBar(_Lines(plain))._plain(done, progress_text(done, None), 0.0)
    assert plain[0].startswith("world: tiles 1,365/1,365 (100%) · jobs 12/12 · "), plain


class _Lines:
    """A stream that is not a terminal, keeping what is written."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass


def test_a_finished_run_shows_its_average_rate_and_counts_with_separators():
    bar = ProgressBar(enabled=False)
    running = {"project": "big", "state": "running", "total": 3000, "done": 2990, "failed": 0,
               "reused": 2990, "partial": 0.0, "stalled": None,
               "units": {"name": "items", "done": 8970, "failed": 0, "partial": 0, "total": 9000}}
    bar.line(running, now=0.0)
    finished = {**running, "state": "done", "done": 3000, "reused": 3000, "rate": 250.0,
                "units": {**running["units"], "done": 9000, "rate": 750.0}}
    bar.line(finished, now=5.0)
    text = bar.line(finished, now=30.0)  # nothing moved over the last window: it was 0.0 items/s
    assert text == "items 9,000/9,000 · jobs 3,000/3,000 · 750.0 items/s · ETA 00:00 · 3,000 reused", text
    jobs_only = {**finished, "units": None, "failed": 1200, "total": 4200}
    assert progress_text(jobs_only, 0.0) == "jobs 3,000/4,200 · 250.0 jobs/s · ETA 00:00 · 1,200 failed" \
        " · 3,000 reused", progress_text(jobs_only, 0.0)
    cancelled = {**finished, "state": "cancelled", "done": 2990, "units": {**running["units"], "rate": 750.0}}
    assert " · 750.0 items/s · ETA --:-- · " in progress_text(cancelled, 0.0), progress_text(cancelled, 0.0)


def test_a_paused_run_has_no_eta_in_status_the_line_or_the_api(web, agents, synthetic):  # noqa: F811
    url = web.controller.url
    agents(url, 1)
    with Client(url) as client:
        run = client.submit(load_project(synthetic(jobs=40, sleep=0.2, units_per_job=[2], name="paced")))
        try:
            # a rate to go on: jobs done, and more than the half second before a rate is said
            wait_for(lambda: (lambda s: s["done"] >= 2 and s["elapsed_s"] > 0.8)(client.project(run)), 60,
                     "two jobs done")
            assert client.pause(run)["paused"] is True
            wait_for(lambda: (lambda s: s["running"] == s["collating"] == 0)(client.project(run)), 60,
                     "the jobs in flight to finish")
            snap = client.project(run)
            assert snap["paused"] and snap["state"] == "running" and snap["done"] < 40, snap
            assert snap["units"]["rate"] and snap["units"]["done"] < snap["units"]["total"], snap
            assert snap["eta_s"] is None and snap["units"]["eta_s"] is None, snap
            api = web.get(f"/api/v1/projects/{run}").json()
            assert api["eta_s"] is None and api["units"]["eta_s"] is None, api
            assert api["progress"]["units"]["eta_s"] is None, api
            (line,) = (line for line in status_text(client.status()).splitlines() if run in line)
            assert " paused " in line and "ETA" not in line, line
            # no pace on the line either: the last seconds' rate is not the paused run's
            line = progress_text(snap, 5.0)
            assert line.endswith(" · -- items/s · ETA --:-- · waiting: paused"), line
        finally:
            client.cancel(run)
