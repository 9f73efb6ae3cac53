"""The lifecycle a plugin is promised: the output folder exists before `collate` and `finalize`
on every path, and `finalize` gets the whole run's done, failed and reused job keys, also
after a controller restart (the journal keeps them). Real controllers, agents and SQLite."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from journal_helpers import to_schema_1

import farm.plugins
from farm.client import Client, submit
from farm.controller.server import Controller
from farm.hookspecs import hookimpl
from farm.journal import Journal
from farm.mediatype import CollateContext, Job, MediaType, RenderContext
from farm.plugins import PluginInfo, Plugins
from farm.project import load_project
from farm.pytest_plugin import write_project
from farm.testing import run_local


def keys(*numbers: int) -> list[str]:
    return [f"job-{i:07d}" for i in numbers]


def outcome(project: Path) -> dict[str, list[str]]:
    return json.loads((project / "output" / "outcome.json").read_text())


def test_a_run_with_no_jobs_finalizes_into_an_existing_output_folder(controller, agents, synthetic):
    project = synthetic(jobs=0, report=True)
    agents(controller.url, 1)
    summary = submit(controller.url, load_project(project))
    assert summary.ok and summary.total == 0, summary
    assert outcome(project) == {"done": [], "failed": [], "reused": []}


def test_a_run_whose_jobs_are_all_reused_finalizes_with_them_done_and_reused(controller, agents, synthetic):
    project = synthetic(jobs=5, output_bytes=8, cache=True, report=True)
    agents(controller.url, 1)
    first = submit(controller.url, load_project(project))
    assert first.ok and first.reused == 0, first
    assert outcome(project) == {"done": keys(*range(5)), "failed": [], "reused": []}
    shutil.rmtree(project / "output")  # nothing renders again, and the folder is there for collate
    again = submit(controller.url, load_project(project))
    assert again.ok and again.reused == 5, again
    assert outcome(project) == {"done": keys(*range(5)), "failed": [], "reused": keys(*range(5))}
    assert sorted(p.name for p in (project / "output").glob("*.bin")) == [f"{k}.bin" for k in keys(*range(5))]


def test_after_a_controller_restart_finalize_gets_the_whole_runs_done_and_failed(tmp_path, agents, synthetic):
    jobs = 30
    project = synthetic(jobs=jobs, sleep=0.05, fail=keys(1), report=True, extra="[jobs]\nmax_attempts = 1\n")
    url = f"ipc://{tmp_path}/controller.sock"
    state = tmp_path / "state"
    ctl = Controller(url, state_dir=state, heartbeat=0.5, liveness=4).start()
    try:
        agents(url, 1)
        with Client(url, timeout=60) as client:
            run_id = client.submit(load_project(project))
        run = ctl.runs[run_id]
        wait_for(lambda: run.failures and run.done >= 5, 120, "a failure and 5 jobs done")
    finally:
        ctl.stop()  # this process's memory of the run is gone; the journal stays
    assert run.done < jobs - 1, "the run ended before the restart; make its jobs longer"
    ctl = Controller(url, state_dir=state, heartbeat=0.5, liveness=4).start()
    try:
        resumed = ctl.runs[run_id]
        assert list(resumed.failures) == keys(1) and resumed.ctx.failed == set(keys(1))
        wait_for(lambda: resumed.state in ("done", "failed"), 180, "the resumed run to finish")
    finally:
        ctl.stop(shutdown_agents=True)
    assert resumed.state == "failed" and [f.key for f in resumed.failures.values()] == keys(1)
    report = outcome(project)
    assert report["failed"] == keys(1)  # failed before the restart, not run again after it
    assert report["done"] == [k for k in keys(*range(jobs)) if k != keys(1)[0]]
    assert report["reused"] == []


def test_the_journal_keeps_which_jobs_were_reused_and_an_older_file_gains_the_column(tmp_path):
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        journal.add_project("p", {"root": "/x"}, 0, 0.0)
        journal.job_done("p", "a", None)
        journal.job_done("p", "b", None, "cache-b", reused=True)
        journal.job_failed("p", "c", "broke", "", 1)
    with Journal(path) as journal:
        assert journal.keys("p", "done") == {"a", "b"} and journal.keys("p", "reused") == {"b"}
        assert journal.keys("p", "failed") == {"c"}
        assert journal.counts("p") == {"done": 2, "failed": 1, "reused": 1}
    with sqlite3.connect(path) as db:  # the file as a farm before the reused column wrote it
        to_schema_1(db)
        db.execute("ALTER TABLE jobs DROP COLUMN reused")
    with Journal(path) as journal:
        assert journal.keys("p", "done") == {"a", "b"} and journal.keys("p", "reused") == set()
        journal.job_done("p", "d", None, reused=True)
        assert journal.keys("p", "reused") == {"d"}


# -- farm.testing.run_local gives finalize the same promises ------------------------------

class Outcome(MediaType):
    """Writes, in finalize, what it was told about the run, and checks the folder exists at each step."""

    name = "t_outcome"

    def configure(self, settings):
        values = {"jobs": settings.integer("jobs", 4, min=0)}
        settings.finish()
        return values

    def count(self, project):
        return project.settings["jobs"]

    def split(self, project) -> Iterator[Job]:
        for i in range(project.settings["jobs"]):
            yield Job(f"j{i}", {})

    def render(self, job: Job, ctx: RenderContext) -> Mapping[str, Any] | None:
        return None

    def collate(self, job, result, outputs, ctx: CollateContext) -> None:
        assert ctx.output_dir.is_dir() and job.key not in ctx.done
        ctx.state.setdefault("seen", []).append(job.key)

    def finalize(self, ctx: CollateContext) -> list[Path]:
        report = ctx.output_dir / "outcome.json"  # no mkdir: the folder is promised
        report.write_text(json.dumps({"done": sorted(ctx.done), "failed": sorted(ctx.failed),
                                      "reused": sorted(ctx.reused), "seen": len(ctx.state.get("seen", []))}))
        return [report]


class _Plugin:
    @staticmethod
    @hookimpl
    def farm_register_media_types(register: Any) -> None:
        register(Outcome)


@pytest.fixture
def outcome_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = Plugins()
    fresh.register(_Plugin(), PluginInfo(name="lifecycle", version="0", module=__name__))
    monkeypatch.setattr(farm.plugins, "_plugins", fresh)


@pytest.mark.parametrize("jobs", [0, 1, 6])
def test_run_local_gives_finalize_the_folder_and_every_done_key_across_its_restart(
        tmp_path, outcome_plugin, jobs):
    folder = write_project(tmp_path / "p", "t_outcome", {"jobs": jobs})
    run = run_local(folder)
    report = json.loads(run.outputs[0].read_text())
    assert report["done"] == sorted(f"j{i}" for i in range(jobs))
    assert report["failed"] == report["reused"] == []
    if jobs > 1:  # the restart emptied state: a counter there misses the first half, done does not
        assert run.restarted_after and report["seen"] == jobs - run.restarted_after


def test_job_keys_follow_the_run_and_another_thread_reads_what_is_committed(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from farm.controller.outcome import JobKeys

    with Journal(tmp_path / "journal.sqlite", commit_interval=3600) as journal:
        journal.add_project("p", {"root": "/x"}, 0, 0.0)
        done = JobKeys(journal, "p", "done")
        journal.job_done("p", "a", None)
        assert "a" in done and len(done) == 1  # this (the loop's) thread sees the open batch
        journal.job_done("p", "b", None)
        done.add("b")  # as the run does when it journals a job
        assert sorted(done) == ["a", "b"]
        unread = JobKeys(journal, "p", "done")  # not read on this thread yet
        with ThreadPoolExecutor(1) as other:  # finalize's thread: what is committed, nothing yet
            assert other.submit(lambda: set(unread)).result() == set()
            journal.flush()
            for keys in (done, unread):
                keys.settled()
                assert other.submit(lambda k=keys: (set(k), "b" in k)).result() == ({"a", "b"}, True)
        with pytest.raises(ValueError, match="outcome must be one of"):
            JobKeys(journal, "p", "pending")


# -- run_local plays the controller's load: no renderer checks, the submitter's facts ------

class Measured(MediaType):
    """Counts the lines of its input "with the renderer"; a controller takes the count from the facts."""

    name = "t_measured"
    honest = True  # False: forgets to say what it measured (no renderer_facts)

    def configure(self, settings):
        source = settings.asset("input")
        settings.finish()
        if settings.renderer_checks:
            lines = len((settings.root / source).read_text().splitlines())
        else:
            facts = settings.facts_reader()
            lines = facts.integer("lines", 0, min=0, max=10_000)
            facts.finish()
        return {"input": source, "lines": lines}

    def renderer_facts(self, settings):
        return {"lines": settings["lines"]} if self.honest else {}

    def count(self, project):
        return project.settings["lines"]

    def split(self, project) -> Iterator[Job]:
        for i in range(project.settings["lines"]):
            yield Job(f"line-{i}", {})

    def render(self, job, ctx):
        return None

    def finalize(self, ctx):
        return []


def test_run_local_loads_the_project_as_a_controller_with_the_submitters_facts(tmp_path, monkeypatch):
    from farm.errors import PluginError

    fresh = Plugins()
    fresh.register(type("P", (), {"farm_register_media_types": staticmethod(hookimpl(
        lambda register: register(Measured)))})(), PluginInfo(name="measured", version="0", module=__name__))
    monkeypatch.setattr(farm.plugins, "_plugins", fresh)
    folder = write_project(tmp_path / "p", "t_measured", {"input": "data.txt"})
    (folder / "data.txt").write_text("a\nb\nc\n")
    run = run_local(folder)
    assert run.project.facts == {"lines": 3} and len(run.jobs) == 3
    monkeypatch.setattr(Measured, "honest", False)
    with pytest.raises(PluginError, match=r"t_measured.configure made other settings without renderer"):
        run_local(folder)
