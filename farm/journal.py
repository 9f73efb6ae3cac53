"""The controller's durable state: projects and the jobs that have started or finished.

One SQLite file in WAL mode. A job gets a row when it starts or finishes, never merely
for existing, so a project of a million jobs that has done ten holds ten rows.

Job writes are batched. A batch collects in memory, one row per job (a job started and
done within one batch is written once), and commits in one transaction when `tick` finds
it older than ``commit_interval`` or when it holds ``max_batch`` writes, whichever comes
first (or on `flush`/`close`). Reads see the batch: `is_done` and `result` look in it
first, the other reads first write it into the open, uncommitted transaction, which
their queries see. So the controller never re-dispatches a job it has just finished.
A crash (even SIGKILL) loses at most the uncommitted batch; WAL keeps the file
consistent. ``synchronous=NORMAL`` is durable across process crashes; only a power cut
may lose the last commits.

After a restart, a job recorded as running is simply not done: it goes back to
pending. Done jobs are skipped, permanently failed ones are listed by `failed_jobs`.

With ``background=True`` (the controller's) a due batch is committed by a writer thread
of the journal's own, so the loop goes on dispatching while SQLite writes; any other use
of the database (a read, a project write, `flush`) first waits for that commit, and a
failed one raises `JournalError` at the loop's next call. A crash then loses at most the
batch being written and the one collecting. There a job's *running* row waits one commit
longer, so a job that ends meanwhile is written once, and a `jobs_done` call's plain
successes are written as one row of their keys (`farm.journalbatch`); a read of a
project's jobs folds its groups into its rows first. Other connections read the ``jobs``
view, which shows each job's row as schema 1's table held it.

Plain data in and out: project definitions, results and summaries are msgpack-able
values (tuples come back as lists). Called from one thread, like the controller's loop.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from farm.journalbatch import BatchedJobs
from farm.journalschema import (
    OUTCOMES,  # noqa: F401 (farm.controller.outcome reads it here)
    OWN_OUTCOMES,
    PROJECT_STATUSES,
    ROW_RESULT,
    ROW_STATE,
    CacheHit,
    FailedJob,
    JournalDiskFull,
    JournalError,
    ProjectRecord,
    no_room,
    pack_value,
    prepare,
    sqlite_disk_full,
    unpack_value,
)
from farm.paths import private_file

log = logging.getLogger(__name__)


class Journal(BatchedJobs):
    """Durable controller state in one SQLite file; see the module docstring.

    :param path: the database file; created with its parent folders if missing.
    :param commit_interval: seconds an open batch may wait before `tick` commits it.
    :param max_batch: job writes after which the batch commits at once.
    :param clock: monotonic clock in seconds that `tick` compares against (for tests).
    :param background: commit due batches in a writer thread (see the module docstring).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        commit_interval: float = 0.05,
        max_batch: int = 2000,
        clock: Callable[[], float] = time.monotonic,
        background: bool = False,
    ) -> None:
        if commit_interval < 0 or max_batch < 1:
            raise ValueError("commit_interval must be >= 0 and max_batch >= 1")
        self.path = Path(path)
        self._init_batch(commit_interval, max_batch, clock, background)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_file(self.path)  # 0600, and so its -wal and -shm: it holds every project's settings
            # isolation_level=None: we open and commit transactions ourselves.
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10,
                                 check_same_thread=not background)  # the writer thread uses it too
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"journal {self.path}: cannot open: {exc}") from None
        self._db: sqlite3.Connection | None = db
        try:
            prepare(db, self.path)
        except sqlite3.Error as exc:
            db.close()
            self._db = None
            if sqlite_disk_full(exc, self.path.parent):  # not the file to blame: no advice to move it
                why = no_room(self.path.parent, exc)
                raise JournalDiskFull(f"journal {self.path}: cannot open it: {why}; make room there, then "
                                      "start again") from None
            raise JournalError(
                f"journal {self.path}: cannot use this file ({exc}); "
                "is it a farm journal? Move it away to start afresh"
            ) from None
        except JournalError:
            db.close()
            self._db = None
            raise
        self._find_unfolded()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"journal {self.path}: used after close()")
        return self._db

    def _error(self, exc: sqlite3.Error, doing: str) -> JournalError:
        return JournalError(f"journal {self.path}: cannot {doing}: {exc}")

    # -- projects (committed at once, together with any open batch) ----------------------

    def add_project(self, project_id: str, wire: dict[str, Any], priority: int, submitted_at: float) -> None:
        """Record a submitted project and commit.

        Adding an id that exists replaces its definition and makes it unfinished again;
        its done jobs stay done, so a re-submitted project skips work already done.
        """
        if not isinstance(wire, dict):
            raise TypeError(f"project {project_id!r}: wire must be a dict, got {type(wire).__name__}")
        blob = pack_value(wire, f"project {project_id!r} definition")
        self._write(
            "INSERT INTO projects (project_id, wire, priority, submitted_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (project_id) DO UPDATE SET wire = excluded.wire, priority = excluded.priority, "
            "submitted_at = excluded.submitted_at, status = NULL, finished_at = NULL, summary = NULL",
            (project_id, blob, int(priority), float(submitted_at)),
            "record project",
        )
        self.flush()

    def finish_project(self, project_id: str, status: str, summary: dict[str, Any]) -> None:
        """Mark a project 'done', 'failed' or 'cancelled' with its summary, and commit."""
        if status not in PROJECT_STATUSES:
            raise ValueError(f"project status must be one of {sorted(PROJECT_STATUSES)}, got {status!r}")
        blob = pack_value(summary, f"project {project_id!r} summary")
        cursor = self._write(
            "UPDATE projects SET status = ?, finished_at = ?, summary = ? WHERE project_id = ?",
            (status, time.time(), blob, project_id),
            "finish project",
        )
        found = cursor.rowcount > 0
        # the output folder's identity (farm.controller.outputfolder) matters only while it runs
        self._write("DELETE FROM controls WHERE scope = 'output' AND id = ?", (project_id,), "finish project")
        self.flush()
        if not found:
            raise KeyError(f"journal {self.path}: no project {project_id!r}")

    def project_record(self, project_id: str) -> ProjectRecord | None:
        """The project's record, finished or not; None if it was never added."""
        row = self._read(
            "SELECT project_id, wire, priority, submitted_at, status, summary, finished_at "
            "FROM projects WHERE project_id = ?",
            (project_id,),
        ).fetchone()
        return None if row is None else self._project(row)

    def unfinished_projects(self) -> list[ProjectRecord]:
        """Projects to resume after a restart, oldest submission first."""
        rows = self._read(
            "SELECT project_id, wire, priority, submitted_at, status, summary, finished_at "
            "FROM projects WHERE status IS NULL ORDER BY submitted_at, project_id"
        )
        return [self._project(row) for row in rows]

    def finished_projects(self, limit: int) -> list[ProjectRecord]:
        """The `limit` projects that finished last (done, failed or cancelled), oldest first."""
        rows = self._read(
            "SELECT project_id, wire, priority, submitted_at, status, summary, finished_at "
            "FROM projects WHERE status IS NOT NULL ORDER BY finished_at DESC, project_id LIMIT ?",
            (int(limit),),
        ).fetchall()
        return [self._project(row) for row in reversed(rows)]

    @staticmethod
    def _project(row: tuple[Any, ...]) -> ProjectRecord:
        pid, wire, priority, submitted_at, status, summary, finished_at = row
        summary = unpack_value(summary)
        return ProjectRecord(pid, unpack_value(wire), priority, submitted_at, status, summary, finished_at)

    def set_priority(self, project_id: str, priority: int) -> None:
        """A running project's new priority, kept for a restart; committed at once."""
        self._write("UPDATE projects SET priority = ? WHERE project_id = ?", (int(priority), project_id),
                    "change priority")
        self.flush()

    def reopen_project(self, project_id: str) -> None:
        """A finished project runs again (failed jobs retried): unfinished, so a restart resumes it."""
        self._write("UPDATE projects SET status = NULL, finished_at = NULL, summary = NULL WHERE project_id = ?",
                    (project_id,), "reopen project")
        self.flush()

    def set_control(self, scope: str, ident: str, value: Any) -> None:
        """Live-control state (scope "run": {"paused": True}; "agent": {"draining": True}); None clears it."""
        if value is None:
            self._write("DELETE FROM controls WHERE scope = ? AND id = ?", (scope, ident), "record control")
        else:
            self._write("INSERT OR REPLACE INTO controls (scope, id, value) VALUES (?, ?, ?)",
                        (scope, ident, pack_value(value, "control state")), "record control")
        self.flush()

    def controls(self, scope: str) -> dict[str, Any]:
        """Id -> live-control state, for one scope."""
        rows = self._read("SELECT id, value FROM controls WHERE scope = ?", (scope,))
        return {ident: unpack_value(value) for ident, value in rows}

    # -- jobs (batched) ------------------------------------------------------------------

    def job_started(self, project_id: str, key: str, lease: str, agent: str) -> None:
        """A job was leased to an agent. Until it is done it counts as pending after a restart."""
        self._job(project_id, key, "running", lease, agent, None, None, None, None, None)

    def jobs_started(self, project_id: str, keys: list[str], leases: list[str], agent: str) -> None:
        """`job_started` for each job of `keys` with the lease of the same place in `leases`, in order,
        all leased to `agent`: one call for a dispatch turn's leases (the same rows and commits as one
        call each)."""
        self._jobs_started(project_id, keys, leases, agent)

    def job_done(self, project_id: str, key: str, result: Any, cache_key: str | None = None, *,
                 reused: bool = False) -> None:
        """A job finished; `result` is msgpack-able or None. `cache_key` makes it reusable;
        `reused`: its outputs came from the job cache."""
        blob = None if result is None else pack_value(result, f"job {project_id!r}/{key!r} result")
        self._job(project_id, key, "done", None, None, blob, cache_key, None, None, None, reused)

    def jobs_done(self, project_id: str, keys: list[str], results: list[Any]) -> None:
        """`job_done` for each job of `keys` with the result of the same place in `results`, in order,
        rendered and without a cache key: one call for a message's results (the same jobs' states and
        commits as one call each; without results, those started in the batch are written as one
        group row, `farm.journalbatch`)."""
        if results.count(None) == len(results) == len(keys):  # no result to pack (most media types')
            self._jobs_done(project_id, keys, results)
            return
        self._jobs_done(project_id, keys, [None if result is None else
                                           pack_value(result, f"job {project_id!r}/{key!r} result")
                                           for key, result in zip(keys, results, strict=True)])

    def job_failed(self, project_id: str, key: str, error: str, log: str, attempts: int,
                   duration: float | None = None) -> None:
        """A job failed for good, after `attempts` tries; `duration`: its last attempt's, seconds."""
        self._job(project_id, key, "failed", None, None, None, None, error, log, int(attempts),
                  duration=None if duration is None else float(duration))

    # -- writes and reads (after the writer thread's commit) ---------------------------

    def _write(self, sql: str, params: tuple[Any, ...], doing: str) -> sqlite3.Cursor:
        self._wait_writer()
        db = self._conn
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            return db.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from None

    # reads see the batch: `_read_jobs` spills it into the transaction, `is_done`/`result` look in it

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        self._wait_writer()
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._error(exc, "read") from None

    def _read_jobs(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        """A read of the jobs of the project ``params[0]``: the batch and its groups in its rows first."""
        self._spill()
        self._fold(params[0])
        return self._read(sql, params)

    def is_done(self, project_id: str, key: str) -> bool:
        row = self._batched(project_id, key)
        if row is not None:
            return row[ROW_STATE] == "done"
        sql = "SELECT 1 FROM job_rows WHERE project_id = ? AND key = ? AND state = 'done'"
        if self._read(sql, (project_id, key)).fetchone() is not None:
            return True  # a newer group would say done too
        if project_id not in self._unfolded and "" not in self._unfolded:
            return False
        self._fold(project_id)
        return self._read(sql, (project_id, key)).fetchone() is not None

    def done_keys(self, project_id: str) -> set[str]:
        """Keys of the project's done jobs: the ones a resumed run skips."""
        return self.keys(project_id, "done")

    def keys(self, project_id: str, outcome: str) -> set[str]:
        """Keys of the project's jobs with this outcome: "done", "failed" or "reused" (see `OUTCOMES`)."""
        return {key for (key,) in self._read_jobs(OWN_OUTCOMES[outcome], (project_id,))}

    def result(self, project_id: str, key: str) -> Any:
        """A done job's result; KeyError if the job is not done."""
        pending = self._batched(project_id, key)
        if pending is not None:
            row = (pending[ROW_RESULT],) if pending[ROW_STATE] == "done" else None
        else:
            self._fold(project_id)  # a newer group of the job would say done without a result
            row = self._read(
                "SELECT result FROM job_rows WHERE project_id = ? AND key = ? AND state = 'done'",
                (project_id, key),
            ).fetchone()
        if row is None:
            raise KeyError(f"journal {self.path}: job {project_id!r}/{key!r} is not done")
        return unpack_value(row[0])

    def failed_jobs(self, project_id: str) -> list[FailedJob]:
        """The project's permanently failed jobs, by key."""
        rows = self._read_jobs(
            "SELECT key, error, log, attempts, duration, agent FROM job_rows "
            "WHERE project_id = ? AND state = 'failed' ORDER BY key",
            (project_id,),
        )
        return [FailedJob(key, error or "", log or "", attempts or 0, duration, agent)
                for key, error, log, attempts, duration, agent in rows]

    def running_jobs(self, project_id: str) -> list[tuple[str, str | None, str | None]]:
        """(key, lease, agent) of the project's jobs recorded as running: after a restart, the
        attempts the controller's stop cut short."""
        rows = self._read_jobs("SELECT key, lease, agent FROM job_rows "
                               "WHERE project_id = ? AND state = 'running' ORDER BY key", (project_id,))
        return [(key, lease, agent) for key, lease, agent in rows]

    def counts(self, project_id: str) -> dict[str, int]:
        """{"done": n, "failed": n, "reused": n} for the project (done includes reused)."""
        row = self._read_jobs(
            "SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed'), "
            "count(*) FILTER (WHERE state = 'done' AND reused) FROM job_rows WHERE project_id = ?",
            (project_id,),
        ).fetchone()
        return {"done": row[0], "failed": row[1], "reused": row[2]}

    def done_page(self, project_id: str, reused: bool | None, offset: int,
                  limit: int) -> tuple[int, list[tuple[str, str | None]]]:
        """The project's done jobs by key: (how many, a page of (key, agent)).

        `reused`: only those collated from the job cache, only rendered
        ones, or both (None).
        """
        where = "project_id = ? AND state = 'done'" + {None: "", True: " AND reused",
                                                          False: " AND NOT reused"}[reused]
        total = self._read_jobs(f"SELECT count(*) FROM job_rows WHERE {where}", (project_id,)).fetchone()[0]
        rows = self._read(f"SELECT key, agent FROM job_rows WHERE {where} ORDER BY key LIMIT ? OFFSET ?",
                          (project_id, limit, offset)).fetchall()
        return total, rows

    def lookup_cache(self, cache_key: str) -> CacheHit | None:
        """The most recent done job, in any project, recorded with this cache key."""
        sql = ("SELECT project_id, key, result FROM job_rows WHERE cache_key = ? AND state = 'done' "
               "ORDER BY updated_at DESC LIMIT 1")
        self._spill()
        row = self._read(sql, (cache_key,)).fetchone()
        if row is not None and (row[0] in self._unfolded or "" in self._unfolded):
            self._fold(row[0])  # a newer group of that job says done without it
            row = self._read(sql, (cache_key,)).fetchone()
        return None if row is None else CacheHit(row[0], row[1], unpack_value(row[2]))

    def close(self) -> None:
        """Commit and close; closing twice is harmless."""
        if self._db is None:
            return
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
            self._db.close()
            self._db = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
