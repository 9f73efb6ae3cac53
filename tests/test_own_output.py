"""A log of farm's own output written into the project folder is never one of its assets.

The fresh-user run that found it: ``farm --log-level INFO submit . > run.log 2>&1`` failed its
jobs ("run.log changed since it was published"), and ``--watch . | tee ./tee.log`` started
round after round with no edit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import write_project

LIST_ASSETS = "import sys; from farm.project import load_project; print(list(load_project(sys.argv[1]).assets()))"


def _project(tmp_path: Path) -> Path:
    project = write_project(tmp_path / "proj", "synthetic", "jobs = 4\noutput_bytes = 8\n")
    (project / "data.txt").write_text("an asset\n")
    return project


def test_a_file_our_output_is_redirected_into_is_not_an_asset(tmp_path):
    project = _project(tmp_path)
    subprocess.run(["bash", "-c", f'"{sys.executable}" -c "{LIST_ASSETS}" . > run.log 2> err.log'],
                   cwd=project, check=True)
    listed = (project / "run.log").read_text()
    assert "data.txt" in listed and "farm.toml" in listed
    assert "run.log" not in listed and "err.log" not in listed


def test_a_file_a_pipe_reader_writes_our_output_into_is_not_an_asset(tmp_path):
    project = _project(tmp_path)
    subprocess.run(["bash", "-c", f'"{sys.executable}" -c "{LIST_ASSETS}" . | tee tee.log > /dev/null'],
                   cwd=project, check=True)
    listed = (project / "tee.log").read_text()
    assert "data.txt" in listed
    assert "tee.log" not in listed


def test_a_run_logging_into_its_own_project_folder_succeeds(tmp_path):
    project = _project(tmp_path)
    cmd = f'"{sys.executable}" -m farm --log-level DEBUG submit --agents 1 --json . > run.log 2>&1'
    done = subprocess.run(["bash", "-c", cmd], cwd=project, timeout=240)
    log = (project / "run.log").read_text()
    assert done.returncode == 0, log[-3000:]
    summary = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    assert summary["jobs"]["done"] == 4
