"""A controller killed between its job-log writer's commit and its journal's (the two commit
apart) leaves attempts logged as done of jobs the journal never recorded done: the restart runs
them again, and before, their log said "attempt 1: done, attempt 2: done" (found by a user's
kill -9 mid-run). Now that first attempt reads lost, with why; the job's second attempt is done.

A real SQLite journal and job-log file as a killed controller left them, a real controller,
agent and client.
"""

from __future__ import annotations

from journal_helpers import resumed, stopped_run

from farm.controller.joblogs import JobLogs
from farm.controller.joblogstore import FILE as JOBLOGS_FILE
from farm.controller.joblogstore import JobLogStore
from farm.controller.resume import UNJOURNALED
from farm.controller.server import JOURNAL_FILE
from farm.project import load_project


def test_an_attempt_logged_done_that_the_journal_lacks_reads_lost_and_the_job_runs_again(
        tmp_path, synthetic, agents):
    project = load_project(synthetic(jobs=4))
    state = stopped_run(tmp_path / "state", project, ["job-0000000"])  # job-0000001's done was not journaled
    store = JobLogStore(state / JOBLOGS_FILE, state / JOURNAL_FILE)
    logs = JobLogs(store=store, run="run-1")
    logs.notes_from("done", "old-agent", ["job-0000000", "job-0000001"], [0.25, 0.5], [None, None])  # a pack
    store.push()
    assert store.flush()
    store.close()

    with resumed(state, f"ipc://{tmp_path}/ctl.sock", agents) as client:
        summary = client.follow("run-1")
        unrecorded = client.job_log("run-1", "job-0000001")["attempts"]
        recorded = client.job_log("run-1", "job-0000000")["attempts"]
    assert summary.ok and (summary.done, summary.resumed) == (4, 1), summary
    assert [(a["attempt"], a["agent"], a["state"], a["error"]) for a in unrecorded] == [
        (1, "old-agent", "lost", UNJOURNALED), (2, "agent-0", "done", None)], unrecorded
    assert unrecorded[0]["duration_s"] == 0.5
    assert [(a["attempt"], a["state"]) for a in recorded] == [(1, "done")], recorded  # journaled: as it was
    reread = JobLogStore(state / JOBLOGS_FILE, state / JOURNAL_FILE)  # what the next controller reads
    try:
        assert [(a["attempt"], a["state"]) for a in reread.attempts("run-1", "job-0000001")] == [
            (1, "lost"), (2, "done")]
    finally:
        reread.close()
