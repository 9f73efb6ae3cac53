"""A message's plain successes kept as one group row (schema 2's ``done_groups``, written by the
journal's writer thread) read back as the same jobs as one row a job: a journal fed through the
grouped calls (`jobs_started`, `jobs_done`) and one fed the same writes one job at a time
(`job_started`, `job_done`, never grouped) agree on every read, before and after a reopen (which
is a restart's resume), through the journal and through another connection (the ``jobs`` view,
`farm.controller.outcome.read_keys`), over seeded random histories: jobs started and done in one
batch or across commits, failed and retried, restarted after they were done, done with results,
batches that fill in the middle of a call. Real SQLite files; a schema 1 journal brought to 2; and
a real controller's run listed by `farm jobs` after a restart.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from farm.client import Client, submit
from farm.controller.outcome import read_keys
from farm.controller.server import JOURNAL_FILE, Controller
from farm.embedded import start_local_agents, stop_agents
from farm.journal import Journal
from farm.journalschema import SCHEMA_VERSION, kept_schema_1
from farm.project import load_project

PROJECTS = ("p1", "p2")


def _history(seed: int) -> list[tuple]:
    """Writes as the controller makes them (a message's leases, its results), plus the odd ones."""
    rng = random.Random(seed)
    ops: list[tuple] = []
    state: dict[tuple[str, str], str] = {}
    lease = 0
    for _ in range(60):
        project = rng.choice(PROJECTS)
        keys = [f"job-{i:03d}" for i in rng.sample(range(120), rng.randint(1, 12))]
        keys = [k for k in keys if state.get((project, k)) != "running"]
        if not keys:
            continue
        agent = rng.choice(("agent-a", "agent-b"))
        leases = [f"L{lease + i:x}" for i in range(len(keys))]
        lease += len(keys)
        ops.append(("started", project, keys, leases, agent))
        for k in keys:
            state[project, k] = "running"
        if rng.random() < 0.3:
            ops.append(("tick",))
        ends = rng.random()
        if ends < 0.55:  # one RESULTS message: the plain successes together
            ops.append(("done", project, keys, [None] * len(keys)))
            state.update({(project, k): "done" for k in keys})
        elif ends < 0.7:  # with results: never grouped
            ops.append(("done", project, keys, [{"v": i} if i % 2 else None for i in range(len(keys))]))
            state.update({(project, k): "done" for k in keys})
        elif ends < 0.85:
            for k in keys:
                ops.append(("failed", project, k, rng.randint(1, 3)))
                state[project, k] = "failed"
        if rng.random() < 0.4:
            ops.append(("tick",))
    for project, k in [job for job, s in state.items() if s == "running"]:  # the rest end, one by one
        ops.append(("done", project, [k], [None]))
    ops.append(("done_cached", "p1", "cached", {"c": 1}))
    return ops


def _play(path: Path, ops: list[tuple], grouped: bool) -> Journal:
    journal = Journal(path, background=True, max_batch=7, commit_interval=0.0)
    for op in ops:
        kind = op[0]
        if kind == "tick":
            journal.tick()
        elif kind == "started":
            _, project, keys, leases, agent = op
            if grouped:
                journal.jobs_started(project, keys, leases, agent)
            else:
                for key, lease in zip(keys, leases):
                    journal.job_started(project, key, lease, agent)
        elif kind == "done":
            _, project, keys, results = op
            if grouped:
                journal.jobs_done(project, keys, results)
            else:
                for key, result in zip(keys, results):
                    journal.job_done(project, key, result)
        elif kind == "failed":
            _, project, key, attempts = op
            journal.job_failed(project, key, "boom", "log", attempts, 0.5)
        elif kind == "done_cached":
            _, project, key, result = op
            journal.job_done(project, key, result, "ck", reused=True)
    return journal


def _committed(path: Path) -> dict:
    """What another connection sees once the journal committed: the view's rows and the outcome sets."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT project_id, key, state, lease, agent, result, cache_key, error, log, "
                          "attempts, reused, duration FROM jobs ORDER BY project_id, key").fetchall()
    finally:
        db.close()
    journal = Journal.__new__(Journal)
    journal.path = path
    outcomes = {(p, o): read_keys(journal, p, o) for p in PROJECTS for o in ("done", "failed", "reused")}
    return {"rows": rows, "outcomes": outcomes}


def _reads(journal: Journal) -> dict:
    """Every read the controller makes of jobs (resume, dependencies, `farm jobs`, history, the API)."""
    found: dict = {}
    for p in PROJECTS:
        found[p, "counts"] = journal.counts(p)
        for outcome in ("done", "failed", "reused"):
            found[p, outcome] = journal.keys(p, outcome)
        found[p, "failed_jobs"] = journal.failed_jobs(p)
        found[p, "running"] = journal.running_jobs(p)
        for reused in (None, True, False):
            found[p, "page", reused] = [journal.done_page(p, reused, offset, 25)
                                        for offset in range(0, 150, 25)]
        for i in range(120):
            key = f"job-{i:03d}"
            found[p, key] = journal.is_done(p, key)
            if found[p, key]:
                found[p, key, "result"] = journal.result(p, key)
    found["cache"] = journal.lookup_cache("ck")
    return found


def _commit(journal: Journal) -> None:
    """Commit everything through the writer thread (not a read's fold): a running row is held once."""
    for _ in range(3):
        journal._wait_writer()
        journal.tick(float("inf"))
    journal._wait_writer()
    assert journal.unflushed == 0


def _groups(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM done_groups").fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("seed", range(6))
def test_grouped_writes_read_back_as_one_row_a_job(tmp_path: Path, seed: int) -> None:
    ops = _history(seed)
    grouped = _play(tmp_path / "grouped.db", ops, True)
    single = _play(tmp_path / "single.db", ops, False)
    for journal in (grouped, single):
        _commit(journal)
    assert _groups(tmp_path / "grouped.db") > 0, "nothing was grouped: this test would hold nothing"
    assert _groups(tmp_path / "single.db") == 0
    assert _committed(tmp_path / "grouped.db") == _committed(tmp_path / "single.db")
    assert _reads(grouped) == _reads(single)
    grouped.close()
    single.close()
    # a restart: what the resumed runs read, and what the file holds for anyone
    assert _committed(tmp_path / "grouped.db") == _committed(tmp_path / "single.db")
    reopened = [Journal(tmp_path / "grouped.db", background=True), Journal(tmp_path / "single.db")]
    try:
        assert _reads(reopened[0]) == _reads(reopened[1])
    finally:
        for journal in reopened:
            journal.close()


def test_a_job_started_again_after_its_group_is_not_done(tmp_path: Path) -> None:
    """The job's newest write is its state: a start after its group (committed) makes it running."""
    journal = Journal(tmp_path / "j.db", background=True, commit_interval=0.0)
    journal.jobs_started("p", ["a", "b"], ["L1", "L2"], "agent")
    journal.jobs_done("p", ["a", "b"], [None, None])
    _commit(journal)
    assert _groups(tmp_path / "j.db") == 1
    journal.jobs_started("p", ["a"], ["L3"], "agent-2")
    _commit(journal)
    assert read_keys(journal, "p", "done") == {"b"} and read_keys(journal, "p", "failed") == set()
    db = sqlite3.connect(tmp_path / "j.db")
    rows = db.execute("SELECT key, state, lease, agent FROM jobs WHERE project_id = 'p' ORDER BY key")
    rows = rows.fetchall()
    assert rows == [("a", "running", "L3", "agent-2"), ("b", "done", "L2", "agent")]
    db.close()
    assert not journal.is_done("p", "a") and journal.is_done("p", "b")
    assert journal.running_jobs("p") == [("a", "L3", "agent-2")]
    journal.close()



def test_a_message_is_one_group_while_the_writer_is_busy(tmp_path: Path) -> None:
    """A batch that fills while the writer thread still commits the last one is handed over later:
    the message's jobs stay one group (not a group a job from the fill on)."""
    path = tmp_path / "j.db"
    journal = Journal(path, background=True, max_batch=10, commit_interval=0.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the writer's commit waits for this lock: busy
    try:
        first = [f"a{i}" for i in range(5)]
        journal.jobs_started("p", first, [f"L{k}" for k in first], "agent")
        journal.jobs_done("p", first, [None] * 5)  # the 10th write fills the batch: handed over
        assert journal._writing is not None
        second = [f"b{i}" for i in range(10)]
        journal.jobs_started("p", second, [f"L{k}" for k in second], "agent")
        journal.jobs_done("p", second, [None] * 10)  # full all along, the writer busy
    finally:
        other.execute("ROLLBACK")
        other.close()
    _commit(journal)
    assert _groups(path) == 2
    assert journal.done_keys("p") == set(first) | set(second)
    journal.close()

_SCHEMA_1 = """
CREATE TABLE projects (project_id TEXT PRIMARY KEY, wire BLOB NOT NULL, priority INTEGER NOT NULL,
    submitted_at REAL NOT NULL, status TEXT, finished_at REAL, summary BLOB);
CREATE TABLE jobs (project_id TEXT NOT NULL, key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')), lease TEXT, agent TEXT, result BLOB,
    cache_key TEXT, error TEXT, log TEXT, attempts INTEGER, updated_at REAL NOT NULL,
    PRIMARY KEY (project_id, key)) WITHOUT ROWID;
CREATE INDEX jobs_by_cache_key ON jobs (cache_key) WHERE cache_key IS NOT NULL;
INSERT INTO projects VALUES ('p', x'80', 0, 1.0, NULL, NULL, NULL);
INSERT INTO jobs VALUES ('p', 'a', 'done', 'L1', 'agent', NULL, NULL, NULL, NULL, NULL, 2.0);
INSERT INTO jobs VALUES ('p', 'b', 'failed', 'L2', 'agent', NULL, NULL, 'boom', 'log', 3, 3.0);
INSERT INTO jobs VALUES ('p', 'c', 'running', 'L3', 'agent', NULL, NULL, NULL, NULL, NULL, 4.0);
PRAGMA application_id = 1178686029;
PRAGMA user_version = 1;
"""


def test_a_schema_1_journal_is_brought_to_2_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_1)
    before = db.execute("SELECT * FROM jobs ORDER BY key").fetchall()
    db.close()
    journal = Journal(path, background=True, commit_interval=0.0)
    kept = sqlite3.connect(kept_schema_1(path))  # for an older farm, as it was: the way back
    assert kept.execute("PRAGMA user_version").fetchone()[0] == 1
    assert kept.execute("SELECT * FROM jobs ORDER BY key").fetchall() == before
    kept.close()
    assert oct(kept_schema_1(path).stat().st_mode & 0o777) == "0o600"
    assert journal.done_keys("p") == {"a"} and journal.keys("p", "failed") == {"b"}
    assert journal.running_jobs("p") == [("c", "L3", "agent")]
    assert [f.key for f in journal.failed_jobs("p")] == ["b"] and journal.failed_jobs("p")[0].duration is None
    journal.jobs_started("p", ["d"], ["L4"], "agent")
    journal.jobs_done("p", ["c", "d"], [None, None])
    journal.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT key, state, reused FROM jobs ORDER BY key").fetchall() == [
        ("a", "done", 0), ("b", "failed", 0), ("c", "done", 0), ("d", "done", 0)]
    db.close()
    with Journal(path) as again:
        assert again.counts("p") == {"done": 3, "failed": 1, "reused": 0}


def test_a_real_runs_grouped_jobs_list_as_they_were_done_after_a_restart(tmp_path: Path) -> None:
    """A real controller and 2 agents render a synthetic run (its plain successes grouped: enough jobs
    for the writer thread to commit batches of the run, more than the end's flush); after a
    restart, `farm jobs` (the client's page of done jobs) lists each job with the agent its
    `job.done` event named, and the journal reopened holds every job done, as one row a job would."""
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "farm.toml").write_text('[project]\nname = "grp"\nmedia_type = "synthetic"\n'
                                      "[synthetic]\njobs = 5000\n")
    state = tmp_path / "state"
    ctl = Controller("tcp://127.0.0.1:0", state_dir=state).start()
    try:
        procs = start_local_agents(ctl.url, 2)
        try:
            summary = submit(ctl.url, load_project(folder))
        finally:
            stop_agents(procs)
        done_by = {e.job: e.agent for e in ctl.events.buffer if e.type == "job.done" and e.run == summary.id}
    finally:
        ctl.stop()
    assert len(done_by) == 5000 and set(done_by.values()) <= {"local-1", "local-2"}
    assert _groups(state / JOURNAL_FILE) > 0, "nothing was grouped: this test would hold nothing"
    ctl = Controller("tcp://127.0.0.1:0", state_dir=state).start()
    try:
        with Client(ctl.url) as client:
            listed = [job for offset in range(0, 5000, 1000)
                      for job in client.jobs(summary.id, state="done", offset=offset, limit=1000)["jobs"]]
            assert client.jobs(summary.id, state="done")["total"] == 5000
    finally:
        ctl.stop()
    assert [(job["key"], job["state"], job["agent"]) for job in listed] == [
        (key, "done", agent) for key, agent in sorted(done_by.items())]
    with Journal(state / JOURNAL_FILE) as journal:
        assert journal.done_keys(summary.id) == set(done_by)
        assert journal.counts(summary.id) == {"done": 5000, "failed": 0, "reused": 0}
        assert journal.running_jobs(summary.id) == [] and journal.failed_jobs(summary.id) == []
