"""A failed job's time survives a controller restart: the journal keeps its last attempt's duration,
so `farm jobs RUN` (and the HTTP job page, from the same QUERY) shows it for a run that finished
before the restart. A journal from before the column keeps working: it gains the column on opening."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from journal_helpers import to_schema_1

from farm.client import Client, submit
from farm.controller.server import JOURNAL_FILE, Controller
from farm.journal import Journal
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


def test_a_failed_jobs_time_is_shown_after_a_restart(tmp_path, agents, synthetic):
    # job 1 hangs until its 1.5 s timeout kills it: its one attempt took about that long
    project = load_project(synthetic(jobs=3, hang=["job-0000001"], name="timed",
                                     extra="[jobs]\nmax_attempts = 1\ntimeout = 1.5\n"))
    state = tmp_path / "state"
    first = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4)
    first.start()
    try:
        agents(first.url, 1)
        summary = submit(first.url, project)
        with Client(first.url) as client:
            live = client.jobs(summary.id, state="failed")["jobs"]
    finally:
        first.stop(shutdown_agents=True)
    assert summary.state == "failed" and summary.failed == 1
    assert live[0]["duration_s"] is not None and live[0]["duration_s"] >= 1.0, live

    again = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4)
    again.start()
    try:
        with Client(again.url) as client:
            page = client.jobs(summary.id, state="failed")
        shown = subprocess.run([*FARM, "jobs", summary.id, "--state", "failed", "--controller", again.url],
                               capture_output=True, text=True, timeout=120)
    finally:
        again.stop()
    (failed,) = page["jobs"]
    assert failed["key"] == "job-0000001" and failed["duration_s"] == live[0]["duration_s"], page
    assert failed["agent"] == live[0]["agent"], page
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith("job-0000001"))
    assert f"{failed['duration_s']:.1f}s" in row, shown.stdout


def test_a_journal_without_the_duration_column_keeps_working(tmp_path):
    path = tmp_path / JOURNAL_FILE
    journal = Journal(path)
    journal.add_project("run-1", {"name": "old"}, 0, 0.0)
    journal.job_failed("run-1", "job-a", "boom", "log", 3)
    journal.close()
    with sqlite3.connect(path) as db:  # as a (schema 1) journal written before the column was added
        to_schema_1(db)
        db.execute("ALTER TABLE jobs DROP COLUMN duration")
    journal = Journal(path)
    try:
        (old,) = journal.failed_jobs("run-1")
        assert (old.key, old.error, old.attempts, old.duration) == ("job-a", "boom", 3, None)
        journal.job_failed("run-1", "job-b", "bang", "", 1, 2.5)
        journal.flush()
        got = [(f.key, f.duration) for f in journal.failed_jobs("run-1")]
        assert got == [("job-a", None), ("job-b", 2.5)]
    finally:
        journal.close()
