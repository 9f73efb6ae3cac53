"""An output folder removed while its run writes there, or while its controller is stopped, took the
outputs of the jobs collated before with it. Before: a media type that makes its folders as it goes
(synthetic, like many a plugin) ended the run done, exit 0, with those outputs missing; and an
embedded `farm submit` interrupted (Ctrl-C), its output folder removed, and submitted again resumed
from the jobs "done" and ended done, exit 0, with only the last jobs' outputs. Now the run stops
naming the folder, no job blamed (`code` "output_removed"), and a run whose folder went while its
controller was stopped is not resumed: the project submitted again renders whole.

Real controller, real agent processes, real SIGINT to a real `farm submit`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from conftest import Background, wait_for, write_project
from control_helpers import EventLog, remove_while_paused

FARM = [sys.executable, "-m", "farm"]


def test_a_folder_removed_mid_run_stops_it_naming_the_folder_and_blaming_no_job(
        tmp_path, controller, agents, synthetic):
    project = synthetic(jobs=8, sleep=0.2, output_bytes=16)
    output = project / "output"
    events = EventLog(controller)
    run = Background(controller.url, project)
    agents(controller.url, 1)
    wait_for(lambda: len(events.of("job.done")) >= 2, 120, "two jobs collated")
    run_id = events.of("job.done")[0].run
    remove_while_paused(controller.url, run_id, output)  # between two collates: jobs still to come
    wait_for(run.done, 120, "the run")
    assert run.error is None, run.error
    summary = run.summary
    # before: state "done", ok, and output/ held only the jobs collated after the removal
    assert summary.state == "failed" and not summary.ok, summary
    assert summary.error.startswith(f"the output folder {output} was removed or moved away during the run"), \
        summary.error
    assert summary.code == "output_removed" and summary.failures == [], summary  # no job blamed


def _outputs(project: Path) -> set[str]:
    return {path.name for path in (project / "output").glob("*.bin")}


def test_an_interrupted_run_whose_folder_went_is_not_resumed_but_rendered_whole(tmp_path):
    jobs = 10
    table = f"jobs = {jobs}\nsleep = 0.3\noutput_bytes = 16\n"
    project = write_project(tmp_path / "slow", "synthetic", table, name="slow")
    with open(tmp_path / "err", "w") as stderr:
        proc = subprocess.Popen([*FARM, "submit", str(project), "--agents", "1"], stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True)
        try:
            wait_for(lambda: len(_outputs(project)) >= 3, 180, "three jobs done")
            os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C
            assert proc.wait(120) == 130, (tmp_path / "err").read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert len(_outputs(project)) < jobs
    shutil.rmtree(project / "output")  # a clean slate before the next try, as people do

    again = subprocess.run([*FARM, "submit", str(project), "--agents", "1", "--json"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["jobs"]["done"] == jobs
    # before: the jobs done before the removal were "resumed": their outputs were missing, exit 0
    assert _outputs(project) == {f"job-{i:07d}.bin" for i in range(jobs)}, again.stderr
    assert f"the output folder {project / 'output'} was removed or moved away while the controller was " \
           "stopped" in again.stderr and "not resumed" in again.stderr, again.stderr


def test_a_run_settled_in_groups_journals_its_folder_too(tmp_path, controller, agents, synthetic):
    """Jobs without files settle a message's group at a time (`farm.controller.settling`): the run's
    output folder is journaled there too (until the run ends), or a restart could not tell that it
    went meanwhile."""
    agents(controller.url, 1)
    run = Background(controller.url, Path(synthetic(jobs=40, sleep=0.1)))
    seen: dict = {}

    def kept() -> bool:
        seen.update(controller.journal.controls("output"))
        return bool(seen) or run.done()

    wait_for(kept, 120, "the folder journaled, or the run over")
    assert len(seen) == 1 and len(next(iter(seen.values()))) == 2, seen  # [st_dev, st_ino]
    wait_for(run.done, 120, "the run")
    assert run.error is None and run.summary.ok and run.summary.id in seen, run.error or run.summary
