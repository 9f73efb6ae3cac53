"""A cancelled remote run's download lands beside an earlier run's per-job outputs: its summary
says which files in the folder it did not bring (an earlier run's, or the user's), and keeps them.
Real controller, agent, upload, download and `farm submit` / `farm cancel` processes."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import wait_for

from farm.client import Client, submit
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]
JOBS = 40
SIZE = 64


def test_a_cancelled_runs_download_names_the_files_it_did_not_bring(controller, agents, synthetic, tmp_path):
    agents(controller.url, 1)
    project = synthetic(jobs=JOBS, output_bytes=SIZE, name="again")
    first = submit(controller.url, load_project(project), upload=True)
    assert first.ok, first
    out = project / "output"
    assert len(list(out.glob("*.bin"))) == JOBS

    toml = project / "farm.toml"  # slower jobs, so the second run is cancelled with few of them done
    toml.write_text(toml.read_text().replace(f"jobs = {JOBS}", f"jobs = {JOBS}\nsleep = 0.5"))
    collated = controller.stats["collated"]
    submitter = subprocess.Popen([*FARM, "submit", "--json", "--controller", controller.url, str(project)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: controller.stats["collated"] >= collated + 2, 120, "some jobs to be collated")
        with Client(controller.url, timeout=30) as client:
            cancelled = client.cancel("again")
        report, err = submitter.communicate(timeout=120)
    finally:
        if submitter.poll() is None:
            submitter.kill()
            submitter.communicate()
    assert submitter.returncode == 1, err
    summary = json.loads(report)
    assert summary["state"] == "cancelled" and 2 <= summary["jobs"]["done"] < JOBS, summary
    older = JOBS - summary["jobs"]["done"]
    # before the fix: no note; the earlier run's job files passed for this run's
    (note,) = [n for n in summary["notes"] if "the run was cancelled" in n]
    assert f"its download brought {summary['jobs']['done']} files" in note, note
    assert f"in {out} are not this run's (an earlier run's, or yours), {older} in all" in note, note
    assert len(list(out.glob("*.bin"))) == JOBS  # nothing removed

    fetched = tmp_path / "fetched"  # fetched into a folder of the user's, that has a file of theirs
    fetched.mkdir()
    (fetched / "mine.txt").write_text("my notes\n")
    later = subprocess.run([*FARM, "cancel", cancelled.id, "--controller", controller.url, "--json",
                            "--download", str(fetched)], capture_output=True, text=True, timeout=120)
    assert later.returncode == 0, later.stderr
    again = json.loads(later.stdout)
    assert any("mine.txt in " in n and "1 in all" in n for n in again["notes"]), again
    assert (fetched / "mine.txt").read_text() == "my notes\n"
