"""Ctrl-C on an embedded `farm submit` says how far the run got and that submitting again resumes
(it does, from .farm/); with --json, one JSON object as other errors. Real processes, real SIGINT
to the process group, as a terminal sends it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for, write_project

FARM = [sys.executable, "-m", "farm"]
JOBS = 12


def _outputs(project: Path) -> dict[str, int]:
    """The collated outputs: name -> modification time (ns)."""
    return {path.name: path.stat().st_mtime_ns for path in (project / "output").glob("*.bin")}


def _interrupted(project: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Start an embedded submit, Ctrl-C it once 3 jobs' outputs are collated; (its end, the outputs
    collated by the time it ended)."""
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([*FARM, "submit", str(project), "--agents", "1", *extra], stdout=stdout,
                                stderr=stderr, start_new_session=True)
        try:
            wait_for(lambda: len(list((project / "output").glob("*.bin"))) >= 3, 180, "three jobs done")
            os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: the agents get it too
            proc.wait(120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    ended = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    return ended, _outputs(project)


def _project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "slow", "synthetic", f"jobs = {JOBS}\nsleep = 0.4\noutput_bytes = 16\n",
                         name="slow")


def test_ctrl_c_says_how_far_the_run_got_and_submitting_again_resumes(tmp_path):
    project = _project(tmp_path)
    done, seen = _interrupted(project, tmp_path)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    said = re.fullmatch(rf"interrupted: (\d+) of {JOBS} jobs done; `farm submit {re.escape(str(project))}` "
                        r"again resumes from them \(kept in \.farm/\)", last)
    assert said, done.stderr
    assert 1 <= int(said[1]) < JOBS, last

    again = subprocess.run([*FARM, "submit", str(project), "--agents", "1", "--json"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    jobs = json.loads(again.stdout)["jobs"]
    assert jobs["done"] == JOBS, jobs
    after = _outputs(project)
    assert len(after) == JOBS and all(after[name] == mtime for name, mtime in seen.items()), (seen, after)
    # resumed: what was done is not rendered (nor collated) again


@pytest.mark.parametrize("extra", [["--json"]])
def test_ctrl_c_with_json_prints_one_object(tmp_path, extra):
    project = _project(tmp_path)
    done, _ = _interrupted(project, tmp_path, *extra)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stdout.strip().splitlines()
    obj = json.loads(line)
    assert obj["state"] == "interrupted" and obj["code"] == "interrupted", obj
    assert obj["total"] == JOBS and 1 <= obj["done"] < JOBS and obj["error"].startswith("interrupted: "), obj
