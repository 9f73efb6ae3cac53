"""A job whose outputs are being collated (the collator thread) is listed, counted and filterable.

Before, such a job was in none of running, queued, failed, done: `GET .../jobs`, the client's
`jobs` and the dashboard missed it, and the states did not add up to the run's total. The
controller (with its HTTP API) runs in this process so its `synthetic` collate can be held on
an event for one key; agents are real processes, the API is asked over real HTTP.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from conftest import Background, wait_for
from dashboard_helpers import browser, js, open_project  # noqa: F401 (a fixture)
from farm_synthetic import Synthetic, job_key
from http_helpers import HttpFarm

from farm.client import Client
from farm.controller.control import JOB_STATES
from farm.controller.server import Controller
from farm.http.api import JobState
from farm.http.server import HttpServer

JOBS = 4
HELD = job_key(2)  # its collate waits on the test; the ones queued behind it wait too


@pytest.fixture
def web(tmp_path: Path) -> Iterator[HttpFarm]:
    """http_helpers' farm with a liveness of 5 s: a loaded machine's late heartbeat requeues no job here."""
    http = HttpServer("127.0.0.1", 0, keys_dir=tmp_path / "keys", keepalive_s=0.5)
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=10, http=http)
    ctl.start()
    yield HttpFarm(ctl, http, f"http://127.0.0.1:{http.port}")
    ctl.stop(shutdown_agents=True)


class Held:
    """`HELD`'s collate blocks until `set`; `entered` lists the keys whose collate began, in order."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered: list[str] = []

    def set(self) -> None:
        self.release.set()

    def settled(self, run: Any) -> bool:
        """Every job rendered; `HELD`'s collate has begun and those the collator took before it are
        settled, so what is being collated now stays so until `set` (the collator takes one at a time)."""
        if HELD not in self.entered or not run.exhausted or run.done + len(run.collating) != JOBS:
            return False
        return not set(self.entered[:self.entered.index(HELD)]) & set(run.collating)


@pytest.fixture
def held_collate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    """Synthetic's collate blocks on the yielded `Held` for `HELD` (released after the test in any case)."""
    held = Held()
    collate = Synthetic.collate

    def gated(media, job, result, outputs, ctx):
        held.entered.append(job.key)
        if job.key == HELD:
            assert held.release.wait(120), "never released"
        collate(media, job, result, outputs, ctx)

    monkeypatch.setattr(Synthetic, "collate", gated)
    yield held
    held.set()


def held_run(web: HttpFarm, agents: Any, synthetic: Any, held: Held) -> tuple[Any, Background, list[str]]:
    """A run of `JOBS` jobs, all rendered, `HELD` among those being collated: (the controller's
    run, its submitter, the keys being collated)."""
    agents(web.controller.url, 2)
    # with outputs: collated on the collator thread (a result without any is collated at once)
    submitted = Background(web.controller.url, synthetic(jobs=JOBS, output_bytes=16))
    wait_for(lambda: web.controller.runs, 30, "the run")
    run = next(iter(web.controller.runs.values()))
    # every job rendered: each is done or waiting in the collator (HELD, and those queued behind it);
    # a job handed over before HELD may still be collating when HELD joins `collating`: wait it out
    wait_for(lambda: held.settled(run), 60, "every job rendered, HELD's collate held")
    return run, submitted, sorted(run.collating)


def test_a_job_being_collated_is_listed_counted_and_filterable(web, agents, synthetic, held_collate):
    assert get_args(JobState) == JOB_STATES  # the API accepts exactly the controller's states
    run, submitted, collating = held_run(web, agents, synthetic, held_collate)
    listing = web.get(f"/api/v1/projects/{run.id}/jobs").json()
    by_state: dict[str, list[str]] = {}
    for job in listing["jobs"]:
        by_state.setdefault(job["state"], []).append(job["key"])
    assert by_state.get("collating") == collating, listing
    assert sorted(k for keys in by_state.values() for k in keys) == [job_key(i) for i in range(JOBS)], listing
    assert listing["total"] == JOBS and listing["unlisted"] == 0
    held = next(job for job in listing["jobs"] if job["key"] == HELD)
    assert held["attempts"] >= 1 and held["agent"] in ("agent-0", "agent-1") and held["error"] is None, held

    for state in JOB_STATES:  # every listed state is a filter, over HTTP and through the client
        page = web.get(f"/api/v1/projects/{run.id}/jobs", params={"state": state})
        assert page.status_code == 200, (state, page.text)
        assert [j["key"] for j in page.json()["jobs"]] == by_state.get(state, []), (state, page.json())
        with Client(web.controller.url, timeout=30) as client:
            assert [j["key"] for j in client.jobs(run.id, state=state)["jobs"]] == by_state.get(state, [])
    assert web.get(f"/api/v1/projects/{run.id}/jobs", params={"state": "collated"}).status_code == 422

    snap = web.get(f"/api/v1/projects/{run.id}").json()
    assert snap["collating"] == len(collating) and snap["progress"]["jobs"]["collating"] == len(collating)
    assert snap["done"] + snap["failed"] + snap["running"] + snap["collating"] == snap["total"] == JOBS, snap
    text = subprocess.run([sys.executable, "-m", "farm", "status", "--controller", web.controller.url],
                          capture_output=True, text=True, timeout=60).stdout
    assert f"{len(collating)} collating" in text, text

    held_collate.set()
    wait_for(submitted.done, 60, "the run's end")
    assert submitted.summary is not None and submitted.summary.ok and submitted.summary.done == JOBS
    assert web.get(f"/api/v1/projects/{run.id}/jobs", params={"state": "collating"}).json()["jobs"] == []


def test_the_dashboard_lists_and_filters_jobs_being_collated(web, agents, synthetic, held_collate, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    run, submitted, collating = held_run(web, agents, synthetic, held_collate)
    open_project(browser, web.http.dashboard_url, run.id)
    rows = ("return [...document.querySelectorAll('#jobs tr[data-key]')]"
            ".map(r => [r.dataset.key, r.cells[1].textContent])")
    every = sorted([key, "collating" if key in collating else "done"] for key in map(job_key, range(JOBS)))
    wait_for(lambda: sorted(js(browser, rows)) == every, 30, "every job listed, those being collated as such")
    Select(browser.find_element(By.ID, "job-filter")).select_by_value("collating")
    only = [[key, "collating"] for key in collating]
    wait_for(lambda: js(browser, rows) == only, 30, "only those being collated")
    held_collate.set()
    wait_for(submitted.done, 60, "the run's end")


def test_a_job_being_collated_counts_as_rendered_in_the_progress(web, agents, synthetic, held_collate):
    """Its rendered part stays in the bar and the units until it is done: before, a job leaving
    its agent for the collator dropped out of `partial` and was not yet `done`, so the bar and
    `farm status` went back (frames 62/96, then 40/96) and `farm submit`'s rate, restarted at the
    dip, jumped (16 frames/s for 4) when the collate ended."""
    agents(web.controller.url, 2)
    submitted = Background(web.controller.url, synthetic(jobs=JOBS, output_bytes=16, units_per_job=5))
    wait_for(lambda: web.controller.runs, 30, "the run")
    run = next(iter(web.controller.runs.values()))
    wait_for(lambda: held_collate.settled(run), 60, "every job rendered, HELD's collate held")
    snap = web.get(f"/api/v1/projects/{run.id}").json()
    assert snap["done"] < JOBS and snap["collating"] >= 1, snap
    assert snap["done"] + snap["partial"] == JOBS, snap  # every job rendered: the bar is full
    units = snap["units"]
    assert units["done"] + units["partial"] == units["total"] == 5 * JOBS, units
    assert snap["eta_s"] in (0, 0.0) and units["eta_s"] in (0, 0.0), snap
    held_collate.set()
    wait_for(submitted.done, 60, "the run's end")
    assert submitted.summary is not None and submitted.summary.ok
