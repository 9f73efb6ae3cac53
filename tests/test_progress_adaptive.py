"""Progress of a run whose job sizes are decided as results come in (adaptive chunks): the main
figure is the media's units, whose total is known from the start and never moves; the job count
is not shown against a total while that total is an estimate (the split goes on), so it never
reads as a total that shrinks (before: "jobs 0/48 -> 1/10 -> 12/12"). Real controller, agent and
client; a small media type that groups 48 "frames" through the controller's `ChunkAdvisor`."""

from __future__ import annotations

import io
import re

from control_helpers import media_type_source, plugin_project

from farm.cli.progress import ProgressBar, progress_text
from farm.cli.status import status_text
from farm.client import Client
from farm.project import load_project

FRAMES = 48
CHUNKY = media_type_source("chunky", "()", f"""
        unit = "frames"
        adaptive_chunks = True

        def count(self, project):
            return {FRAMES}  # at the default chunk, 1: the count before any time is measured

        def units(self, job, project):
            return job.params["n"]

        def total_units(self, project):
            return {FRAMES}

        def split(self, project, chunks=None):
            from farm.mediatype import ChunkAdvisor

            chunks = chunks or ChunkAdvisor()
            start = 0
            while start < {FRAMES}:
                job = chunks.next_job({FRAMES} - start, 1,
                                      lambda n, s=start: Job(f"f-{{s:03d}}-{{s + n - 1:03d}}", {{"n": n}}))
                start += job.units
                yield job

        def render(self, job, ctx):
            import time
            time.sleep(0.03 * job.params["n"])  # about 33 frames a second: chunks grow past 1
            return None
""")

JOBS_OF_A_TOTAL = re.compile(r"jobs ([\d,]+)/(~?[\d,?]+)")


def test_a_run_with_adaptive_chunks_shows_a_steady_total(controller, agents, tmp_path):
    project = plugin_project(tmp_path, controller.url, agents, "chunky", CHUNKY)
    with open(project / "farm.toml", "a") as toml:
        toml.write("[jobs]\ntarget = 1.0\n")
    updates: list[dict] = []
    with Client(controller.url) as client:
        run = client.submit(load_project(project))
        summary = client.attach(run, updates.append)
    assert summary.ok and summary.done == summary.total, summary
    assert summary.total < FRAMES, f"the chunks never grew past one frame: {summary}"  # sizes were decided

    out = io.StringIO()
    bar = ProgressBar(out, plain_every=0)  # not a terminal: a plain line for every update
    for update in updates:
        bar.update(update)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(updates) >= 2, lines
    assert updates[0]["total_estimated"] is True and updates[-1]["total_estimated"] is False, updates
    for update, line in zip(updates, lines):
        assert re.match(rf"chunky: frames [\d,.]+/{FRAMES} ", line), line  # the units' total, from the start
        totals = JOBS_OF_A_TOTAL.findall(line)
        if update["total_estimated"]:  # the count of jobs so far, no total that could move
            done = update["done"]
            assert not totals and f"· {done} job{'' if done == 1 else 's'} done ·" in line, line
        else:  # splitting is over: the total is the run's
            assert totals == [(str(update["done"]), str(summary.total))], line
    final = f"chunky: frames {FRAMES}/{FRAMES} (100%) · jobs {summary.total}/{summary.total}"
    assert lines[-1].startswith(final), lines[-1]


def test_the_text_marks_an_estimated_total_and_keeps_units_first():
    running = {"project": "spin", "state": "running", "total": 10, "done": 3, "failed": 0, "partial": 0.0,
               "total_estimated": True,
               "units": {"name": "frames", "done": 12, "failed": 0, "partial": 0, "total": 48}}
    assert progress_text(running, 4.0) == "frames 12/48 · 3 jobs done · 4.0 frames/s · ETA 00:09"
    assert progress_text({**running, "done": 1}, 4.0).startswith("frames 12/48 · 1 job done ·")
    assert progress_text({**running, "total_estimated": False}, 4.0) == \
        "frames 12/48 · jobs 3/10 · 4.0 frames/s · ETA 00:09"
    jobs_only = {**running, "units": {"name": "jobs", "done": 3, "total": 10}}  # no units of its own
    assert progress_text(jobs_only, 1.0) == "jobs 3/~10 · 1.0 jobs/s · ETA 00:07"


def test_status_marks_an_estimated_total_and_shows_the_units_rate():
    project = {"id": "spin-1a2b3c4d", "media_type": "frames", "state": "running", "total": 10, "done": 3,
               "failed": 0, "running": 2, "rate": 0.5, "eta_s": 14.0, "total_estimated": True,
               "units": {"name": "frames", "done": 12, "failed": 0, "partial": 0, "total": 48,
                         "rate": 4.0, "eta_s": 9.0}}
    report = {"controller": "tcp://x:1", "agents": [], "projects": [project]}
    (line,) = [line for line in status_text(report).splitlines() if "spin-" in line]
    assert "3/~10 done" in line and "frames 12/48" in line, line
    assert "4.0 frames/s" in line and "ETA 00:09" in line and "jobs/s" not in line, line
    (exact,) = [line for line in status_text({**report, "projects": [{**project, "total_estimated": False}]})
                .splitlines() if "spin-" in line]
    assert "3/10 done" in exact, exact


def test_ctrl_c_says_an_estimated_total_is_one():
    from farm.cli.submit import Interrupted

    assert str(Interrupted(3, 10, estimated=True)) == "3 of ~10 jobs done"
    assert str(Interrupted(3, 10)) == "3 of 10 jobs done" and str(Interrupted(0, None)) == "0 of ? jobs done"
