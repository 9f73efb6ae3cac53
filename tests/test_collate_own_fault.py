"""A collate that fails for the controller's own reason (it cannot write the output folder: a full
disk, a folder made read-only mid-run) used to count as the job's attempt: the job was rendered
again on an agent up to its attempts limit, and the run ended with it "failed" after three
attempts, when nothing was wrong with the render. Now the render stands, no job or agent is
blamed, the run stops (its jobs in flight withdrawn) and fails once, naming the folder and the OS
error. A collate that fails because the job's outputs are bad still costs the job an attempt.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
from collections import Counter

import pytest
from agent_trust_helpers import AgentTmp
from conftest import Background, wait_for
from control_helpers import EventLog
from farm_synthetic import Synthetic, job_key, payload
from test_output_unwritable import read_only, writable_again

from farm.controller.collator import own_fault
from farm.errors import RenderError

SIZE = 48 * 1024  # a job's output: one fits the small disk below, two do not


def run_to_the_end(controller, agents, project, agent_tmp, jobs):
    events = EventLog(controller)
    agents(controller.url, 1, slots=2, env=agent_tmp.env)
    run = Background(controller.url, project)
    wait_for(run.done, 120, "the run")
    assert run.error is None, run.error
    events.settled()
    renders = Counter(agent_tmp.lines("renders.log"))
    assert set(renders) <= {job_key(i) for i in range(jobs)}
    return run.summary, events, renders


def assert_stopped_once(summary, events, renders, caplog, folder, strerror):
    assert summary.state == "failed", summary
    assert summary.failures == [] and summary.failed == 0, summary.failures  # no job blamed
    assert f"cannot write the output folder {folder}" in summary.error, summary.error
    assert strerror in summary.error, summary.error
    assert summary.done == 1 and max(renders.values()) == 1 and len(renders) >= 2, renders  # none again
    assert not events.of("job.retried") and not events.of("job.failed"), events.events
    assert not events.of("agent.blocklisted")
    said = [r for r in caplog.records if r.levelno >= logging.WARNING and str(folder) in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]  # once, not once per job


def test_a_full_disk_under_the_output_folder_fails_the_run_once_without_rendering_again(
        controller, agents, synthetic, caplog):
    jobs = 6
    project = synthetic(jobs=jobs, sleep=0.05, output_bytes=SIZE, render_log="renders.log")
    output = project / "output"
    output.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(output)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    agent_tmp = AgentTmp()
    caplog.set_level(logging.INFO, logger="farm")
    try:
        summary, events, renders = run_to_the_end(controller, agents, project, agent_tmp, jobs)
        fit = list(output.iterdir())  # the one job that fit
        assert len(fit) == 1 and fit[0].read_bytes() == payload(fit[0].stem, SIZE), fit
    finally:
        subprocess.run(["umount", "-l", str(output)], capture_output=True)
        agent_tmp.close()
    assert_stopped_once(summary, events, renders, caplog, output, "No space left on device (ENOSPC)")
    with sqlite3.connect(controller.journal.path) as db:  # the job that did not fit is not failed for good
        failed = db.execute("SELECT count(*) FROM jobs WHERE state = 'failed'").fetchone()[0]
    assert failed == 0


def test_an_output_folder_made_read_only_mid_run_fails_the_run_once_without_rendering_again(
        controller, agents, synthetic, caplog, monkeypatch):
    jobs = 6
    project = synthetic(jobs=jobs, sleep=0.05, output_bytes=16, render_log="renders.log")
    output = project / "output"
    collate, first = Synthetic.collate, []

    def then_read_only(media, job, result, outputs, ctx):  # the collate itself is the real one
        collate(media, job, result, outputs, ctx)
        if not first:
            first.append(job.key)
            read_only(output)

    monkeypatch.setattr(Synthetic, "collate", then_read_only)
    agent_tmp = AgentTmp()
    caplog.set_level(logging.INFO, logger="farm")
    try:
        summary, events, renders = run_to_the_end(controller, agents, project, agent_tmp, jobs)
    finally:
        writable_again(output)
        agent_tmp.close()
    strerror = "Operation not permitted (EPERM)" if os.geteuid() == 0 else "Permission denied (EACCES)"
    assert_stopped_once(summary, events, renders, caplog, output, strerror)
    assert sorted(p.name for p in output.iterdir()) == [f"{first[0]}.bin"]


def test_bad_outputs_still_cost_the_job_its_attempts(controller, agents, synthetic, monkeypatch):
    """A collate that refuses the job's own files (RenderError) renders the job again, as before."""
    project = synthetic(jobs=3, output_bytes=16, render_log="renders.log")
    collate = Synthetic.collate

    def refuses_job_1(media, job, result, outputs, ctx):
        if job.key == job_key(1):
            raise RenderError(f"{job.key}: truncated output")
        collate(media, job, result, outputs, ctx)

    monkeypatch.setattr(Synthetic, "collate", refuses_job_1)
    agent_tmp = AgentTmp()
    try:
        summary, events, renders = run_to_the_end(controller, agents, project, agent_tmp, 3)
    finally:
        agent_tmp.close()
    assert summary.state == "failed" and summary.error is None, summary
    assert [f["job"] for f in summary.failures] == [job_key(1)], summary.failures
    assert summary.failures[0]["attempts"] == 3 and renders[job_key(1)] == 3, (summary.failures, renders)
    assert summary.done == 2 and len(events.of("job.retried")) == 2


@pytest.mark.parametrize(("exc", "own"), [
    (OSError(errno.ENOSPC, "No space left on device", "/out/a.bin"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (PermissionError(errno.EACCES, "Permission denied", "/out/a.bin"), True),
    (OSError(errno.EROFS, "Read-only file system"), True),
    (RenderError("job-1: truncated image"), False),
    (OSError("image file is truncated (3 bytes not processed)"), False),  # Pillow's, about the job's file
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), False),
    (ValueError("bad"), False),
])
def test_which_collate_errors_are_the_controllers_own(exc, own):
    assert (own_fault(exc) is not None) == own


def test_an_mbtiles_database_that_is_full_or_read_only_is_the_controllers_own(tmp_path):
    db = sqlite3.connect(tmp_path / "tiles.mbtiles")
    db.execute("CREATE TABLE tiles (data BLOB)")
    db.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError) as full:
        db.execute("INSERT INTO tiles VALUES (?)", (b"x" * 65536,))
    db.close()
    read_only = sqlite3.connect(f"file:{tmp_path / 'tiles.mbtiles'}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as refused:
        read_only.execute("INSERT INTO tiles VALUES (x'00')")
    read_only.close()
    assert own_fault(full.value) is full.value and own_fault(refused.value) is refused.value
    with pytest.raises(sqlite3.OperationalError) as bad:
        sqlite3.connect(":memory:").execute("SELECT nothing FROM nowhere")
    assert own_fault(bad.value) is None


@pytest.mark.parametrize("how", ["from exc", "from None"])
def test_a_render_error_raised_from_a_full_disk_is_still_the_controllers_own(how):
    """A plugin's wording (`raise RenderError(...) from exc`, or even `from None`) hides no full disk."""
    full = OSError(errno.ENOSPC, "No space left on device")
    wrapped = RenderError("could not write the tile")
    wrapped.__context__ = full
    wrapped.__cause__, wrapped.__suppress_context__ = (full, True) if how == "from exc" else (None, True)
    assert own_fault(wrapped) is full
