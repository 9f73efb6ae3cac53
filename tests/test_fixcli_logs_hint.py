"""Where a failed job's whole error and log are said to be: `farm logs RUN JOB` on a standalone
controller, which is still there to ask; what `farm submit` prints for an embedded run, whose
controller is gone when the command ends (real agents, a real plugin whose error has 3 lines)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from control_helpers import media_type_source, plugin_project
from sched_helpers import install_plugin

from farm.client import submit
from farm.project import load_project

#: one job that fails on every attempt with an error of three lines (as a renderer's log tail makes it)
TORN = media_type_source("torn", '["only"]', """
        def render(self, job, ctx):
            from farm.errors import RenderError
            ctx.log.info("the renderer's own output")
            raise RenderError("torn apart\\nsecond line\\nthird line")
""")
FAILED = "torn: job only failed for good: RenderError: torn apart (2 more lines: "


def test_an_embedded_runs_failure_points_at_its_summary_not_at_farm_logs(tmp_path: Path):
    site = install_plugin(tmp_path / "site", "farm_torn_test", TORN, "torn")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    project = tmp_path / "torn"
    project.mkdir()
    (project / "farm.toml").write_text('[project]\nname = "torn"\nmedia_type = "torn"\n[torn]\n'
                                       '[jobs]\nmax_attempts = 1\n')
    for extra in ((), ("--json",)):
        done = subprocess.run([sys.executable, "-m", "farm", "submit", "--agents", "1", *extra, str(project)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        said = [line for line in done.stderr.splitlines() if "failed for good" in line]
        assert len(said) == 1 and FAILED in said[0], done.stderr
        assert "farm logs" not in done.stderr + done.stdout  # its controller is gone: nothing to ask
        assert said[0].endswith("(2 more lines: the run's summary; with --json its failures carry each "
                                "job's log tail)"), said[0]
    # what the hint promises is there: the whole error in the summary, the log tail with --json
    (failure,) = json.loads(done.stdout)["failures"]
    assert failure["error"] == "RenderError: torn apart\nsecond line\nthird line"
    assert "the renderer's own output" in failure["log"]


def test_a_standalone_controllers_log_points_at_farm_logs(controller, agents, tmp_path: Path, caplog):
    project = plugin_project(tmp_path, controller.url, agents, "torn", TORN)
    with open(project / "farm.toml", "a") as toml:
        toml.write("[jobs]\nmax_attempts = 1\n")
    with caplog.at_level(logging.WARNING, logger="farm.controller.run"):
        summary = submit(controller.url, load_project(project))
    assert summary.failed == 1
    said = [r.getMessage() for r in caplog.records if "failed for good" in r.getMessage()]
    assert said == [f"{FAILED}the run's summary, farm logs {summary.id} only)"]
