"""The job-log writer keeps up and stays bounded (real SQLite): a full batch is committed at once,
not after `COMMIT_INTERVAL_S`; while the writer is stalled (here: another connection holds the
file's write lock, as a stalled disk would) the text it holds stays within `backlog_bytes`, the
newest records going to disk without their log text, and the file stays consistent."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from conftest import wait_for

from farm.controller import joblogstore
from farm.controller.joblogs import JobLogs
from farm.controller.joblogstore import DROPPED_TEXT, JobLogStore

RUN = "r1"


def _stalled(path: Path) -> sqlite3.Connection:
    """Hold the file's write lock: the writer's next transaction waits (up to its 10 s busy timeout)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("BEGIN IMMEDIATE")
    return db


def _entry(attempt: int, text: str) -> dict:
    return {"attempt": attempt, "agent": "a", "state": "failed", "error": "boom", "duration_s": 0.1,
            "log": text}


def test_a_full_batch_waiting_is_committed_without_the_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(joblogstore, "COMMIT_INTERVAL_S", 60.0)  # a batch that waits would wait a minute
    path = tmp_path / joblogstore.FILE
    store = JobLogStore(path)
    lock = _stalled(path)
    try:
        store.put(RUN, "first", _entry(1, ""))
        store.flush(timeout=0)  # the writer takes it at once and waits for the lock
        total = 4 * joblogstore.BATCH_OPS
        for i in range(total):
            store.put(RUN, f"job-{i:05d}", _entry(1, "x"))
        lock.execute("ROLLBACK")

        def committed() -> int:
            return lock.execute("SELECT count(*) FROM job_logs").fetchone()[0]

        # every full batch at once: all but the last, partial one, whatever the first batch took
        wait_for(lambda: committed() >= total + 1 - (joblogstore.BATCH_OPS - 1), 30,
                 "the full batches committed without waiting the interval")
        assert store.flush(30) and committed() == total + 1
    finally:
        lock.close()
        store.close()


def test_a_stalled_writer_holds_bounded_text_and_the_file_stays_consistent(tmp_path, caplog):
    path = tmp_path / joblogstore.FILE
    budget = 1024 * 1024
    store = JobLogStore(path, backlog_bytes=budget)
    lock = _stalled(path)
    try:
        logs = JobLogs(per_job=2, log_bytes=64 * 1024, per_run_bytes=10**9, store=store, run=RUN)
        store.flush(timeout=0)  # the writer is stuck on the lock from here on
        with caplog.at_level(logging.WARNING, logger="farm.controller.joblogstore"):
            for i in range(20):
                for attempt in range(3):  # per_job 2: each job's first attempt is deleted again
                    logs.record(f"job-{i:02d}", agent="a", state="failed" if attempt < 2 else "done",
                                error="e" * 5000, duration_s=0.5, log=f"{attempt}" * (64 * 1024))
        # 60 records of ~69 KiB wait; 1 MiB of them kept whole, the rest without their text
        assert 60 - budget // (69 * 1024) - 1 <= store.dropped < 60
        warnings = [r for r in caplog.records if "writer is behind" in r.getMessage()]
        assert len(warnings) == 1 and str(path) in warnings[0].getMessage()  # throttled: once, not 45 times
        lock.execute("ROLLBACK")
        assert store.flush(30)
        keys = [f"job-{i:02d}" for i in range(20)]
        rows = lock.execute("SELECT key, attempt, state, error, log FROM job_logs WHERE run = ?",
                            (RUN,)).fetchall()
        # the rows are memory's attempts, every one (deletes and states applied in order)
        assert sorted((k, a, s) for k, a, s, _, _ in rows) == sorted(
            (key, a["attempt"], a["state"]) for key in keys for a in logs.attempts(key))
        whole = [(k, a) for k, a, _, error, text in rows
                 if text == f"{a - 1}" * (64 * 1024) and error == "e" * 5000]
        cut = [(k, a) for k, a, _, error, text in rows if text == DROPPED_TEXT and error == "e" * 1024]
        assert len(whole) + len(cut) == len(rows) == 40
        assert whole and cut
        # a later read (a restarted controller's) finds every record and numbers on from it
        again = JobLogs(per_job=2, log_bytes=64 * 1024, per_run_bytes=10**9, store=store, run=RUN)
        assert [a["attempt"] for a in again.attempts("job-00")] == [2, 3]
        nxt = again.record("job-00", agent="a", state="done", error=None, duration_s=0.1, log="ok")
        assert nxt["attempt"] == 4
        assert store.flush(30)
    finally:
        lock.close()
        store.close()
