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
batch being written and the one collecting.

Plain data in and out: project definitions, results and summaries are msgpack-able
values (tuples come back as lists). Called from one thread, like the controller's loop.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack

from farm.errors import FarmError
from farm.paths import private_file

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x4641524D  # "FARM": marks the file as ours, see `PRAGMA application_id`
PROJECT_STATUSES = frozenset({"done", "failed", "cancelled"})

_SCHEMA = """
CREATE TABLE projects (
    project_id   TEXT PRIMARY KEY,
    wire         BLOB NOT NULL,     -- msgpack of the project definition
    priority     INTEGER NOT NULL,
    submitted_at REAL NOT NULL,
    status       TEXT,              -- NULL while unfinished
    finished_at  REAL,
    summary      BLOB               -- msgpack
);
CREATE TABLE jobs (
    project_id TEXT NOT NULL,
    key        TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    lease      TEXT,
    agent      TEXT,
    result     BLOB,                -- msgpack, done jobs only
    cache_key  TEXT,                -- done jobs only
    error      TEXT,                -- failed jobs only
    log        TEXT,
    attempts   INTEGER,
    updated_at REAL NOT NULL,
    reused     INTEGER NOT NULL DEFAULT 0,  -- done from the job cache, not rendered
    PRIMARY KEY (project_id, key)
) WITHOUT ROWID;
-- No index on state: it would cost ~40 % of write speed, and done_keys reads one project's range.
-- (No semicolons in comments here: the script is split on them.)
CREATE INDEX jobs_by_cache_key ON jobs (cache_key) WHERE cache_key IS NOT NULL;
"""
# Live control (a paused run, a draining agent): added beside schema 1, so older journals gain it
_CONTROLS = """CREATE TABLE IF NOT EXISTS controls (
    scope TEXT NOT NULL, id TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (scope, id)) WITHOUT ROWID"""

# Every job write is one upsert of the whole row. Lease, agent and attempts survive later
# states that do not carry them, so a done row still says who rendered it.
_UPSERT = """
INSERT INTO jobs (project_id, key, state, lease, agent, result, cache_key, error, log, attempts, updated_at,
    reused)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (project_id, key) DO UPDATE SET state = excluded.state,
    lease = coalesce(excluded.lease, lease), agent = coalesce(excluded.agent, agent),
    result = excluded.result, cache_key = excluded.cache_key, error = excluded.error,
    log = excluded.log, attempts = coalesce(excluded.attempts, attempts), updated_at = excluded.updated_at,
    reused = excluded.reused
"""
_STATE, _LEASE, _AGENT, _RESULT, _ATTEMPTS = 2, 3, 4, 5, 9  # positions in a row tuple
_Row = tuple[
    str, str, str, str | None, str | None, bytes | None, str | None, str | None, str | None, int | None,
    float, int,
]
#: a run's job keys by outcome (`Journal.keys`); done includes reused
OUTCOMES = {
    "done": "SELECT key FROM jobs WHERE project_id = ? AND state = 'done'",
    "failed": "SELECT key FROM jobs WHERE project_id = ? AND state = 'failed'",
    "reused": "SELECT key FROM jobs WHERE project_id = ? AND state = 'done' AND reused",
}


class JournalError(FarmError):
    """The journal file cannot be opened, is not a farm journal, or cannot be written."""


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    """A submitted project as the journal keeps it; `status` is None while unfinished."""

    project_id: str
    wire: dict[str, Any]
    priority: int
    submitted_at: float
    status: str | None = None
    summary: dict[str, Any] | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class FailedJob:
    """A job that failed for good (after its last attempt)."""

    key: str
    error: str
    log: str
    attempts: int


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A finished job whose result can stand in for a new job with the same cache key."""

    project_id: str
    key: str
    result: Any


def _pack(value: Any, what: str) -> bytes | None:
    if value is None:  # most jobs return nothing: store NULL, skip the packer
        return None
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{what} cannot be stored in the journal (not msgpack-able): {exc}") from None


def _unpack(blob: bytes | None) -> Any:
    return None if blob is None else msgpack.unpackb(blob, raw=False, strict_map_key=False)


class Journal:
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
        self.commit_interval = commit_interval
        self.max_batch = max_batch
        self._clock = clock
        self._pending: dict[tuple[str, str], _Row] = {}  # the batch not yet in the transaction
        self._unflushed = 0  # job writes not yet committed, in `_pending` or in the transaction
        self._batch_started = 0.0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="farm-journal") if background else None
        self._writing: Future[None] | None = None  # the batch the writer thread commits now
        self._inflight: dict[tuple[str, str], _Row] = {}  # its rows, which reads still see
        self._inflight_count = 0
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
            self._setup()
        except sqlite3.Error as exc:
            db.close()
            self._db = None
            raise JournalError(
                f"journal {self.path}: cannot use this file ({exc}); "
                "is it a farm journal? Move it away to start afresh"
            ) from None
        except JournalError:
            db.close()
            self._db = None
            raise

    def _setup(self) -> None:
        db = self._conn
        # Read the identity before any PRAGMA that writes, so a foreign file is left untouched.
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if app_id == 0 and version == 0:
            self._create_schema()
        elif app_id != APPLICATION_ID:
            raise JournalError(f"journal {self.path}: an SQLite database, but not a farm journal")
        elif version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path}: schema version {version} is newer than this farm's "
                f"({SCHEMA_VERSION}); upgrade farm or move the file away"
            )
        elif version < SCHEMA_VERSION:  # no older schema exists yet; migrations go here
            raise JournalError(f"journal {self.path}: schema version {version} is not supported")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {self.path}: cannot switch to WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_CONTROLS)
        # added beside schema 1 (an older farm still opens the file): a journal from before it knew no reuse
        if "reused" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
            db.execute("ALTER TABLE jobs ADD COLUMN reused INTEGER NOT NULL DEFAULT 0")

    def _create_schema(self) -> None:
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have created it meanwhile.
            if db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                db.execute("COMMIT")
                return
            if db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                raise JournalError(f"journal {self.path}: an SQLite database, but not a farm journal")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.debug("journal %s: created (schema %d)", self.path, SCHEMA_VERSION)

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
        blob = _pack(wire, f"project {project_id!r} definition")
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
        blob = _pack(summary, f"project {project_id!r} summary")
        cursor = self._write(
            "UPDATE projects SET status = ?, finished_at = ?, summary = ? WHERE project_id = ?",
            (status, time.time(), blob, project_id),
            "finish project",
        )
        found = cursor.rowcount > 0
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
        summary = _unpack(summary)
        return ProjectRecord(pid, _unpack(wire), priority, submitted_at, status, summary, finished_at)

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
                        (scope, ident, _pack(value, "control state")), "record control")
        self.flush()

    def controls(self, scope: str) -> dict[str, Any]:
        """Id -> live-control state, for one scope."""
        rows = self._read("SELECT id, value FROM controls WHERE scope = ?", (scope,))
        return {ident: _unpack(value) for ident, value in rows}

    # -- jobs (batched) ------------------------------------------------------------------

    def job_started(self, project_id: str, key: str, lease: str, agent: str) -> None:
        """A job was leased to an agent. Until it is done it counts as pending after a restart."""
        self._job(project_id, key, "running", lease, agent, None, None, None, None, None)

    def job_done(self, project_id: str, key: str, result: Any, cache_key: str | None = None, *,
                 reused: bool = False) -> None:
        """A job finished; `result` is msgpack-able or None. `cache_key` makes it reusable;
        `reused`: its outputs came from the job cache."""
        blob = _pack(result, f"job {project_id!r}/{key!r} result")
        self._job(project_id, key, "done", None, None, blob, cache_key, None, None, None, reused)

    def job_failed(self, project_id: str, key: str, error: str, log: str, attempts: int) -> None:
        """A job failed for good, after `attempts` tries."""
        self._job(project_id, key, "failed", None, None, None, None, error, log, int(attempts))

    def _job(self, project_id: str, key: str, state: str, lease: str | None, agent: str | None,
             result: bytes | None, cache_key: str | None, error: str | None, log: str | None,
             attempts: int | None, reused: bool = False) -> None:
        if self._db is None:
            raise JournalError(f"journal {self.path}: used after close()")
        if self._unflushed == 0:
            self._batch_started = self._clock()
        pending = self._pending
        prev = pending.get((project_id, key))
        if prev is not None and lease is None:  # what the row in the database would keep
            lease, agent = prev[_LEASE], prev[_AGENT]
        if prev is not None and attempts is None:
            attempts = prev[_ATTEMPTS]
        pending[project_id, key] = (
            project_id, key, state, lease, agent, result, cache_key, error, log, attempts, time.time(),
            int(reused),
        )
        self._unflushed += 1
        if self._unflushed >= self.max_batch:
            if self._writer is None or self._unflushed >= 4 * self.max_batch:
                self.flush()
            elif self._writing is None or self._writing.done():
                self._commit_in_background()

    def _commit_in_background(self) -> None:
        """Hand the batch to the writer thread (the previous one done); the loop goes on."""
        assert self._writer is not None
        self._wait_writer()  # raises if the previous commit failed
        if self._conn.in_transaction:  # a project write is open: commit all together, here
            self.flush()
            return
        self._inflight, self._pending = self._pending, {}
        self._inflight_count, self._unflushed = self._unflushed, 0
        self._writing = self._writer.submit(self._commit_rows, list(self._inflight.values()))

    def _commit_rows(self, rows: list[_Row]) -> None:  # in the writer thread
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_UPSERT, rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise self._error(exc, "record jobs") from None

    def _wait_writer(self) -> None:
        """Wait for the writer thread's commit, if one is running; raise its error, if any."""
        writing, self._writing = self._writing, None
        if writing is not None:
            try:
                writing.result()
            finally:
                self._inflight, self._inflight_count = {}, 0

    def _spill(self) -> None:
        """Write the in-memory batch into the open transaction (without committing it)."""
        self._wait_writer()
        if not self._pending:
            return
        db = self._conn
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            db.executemany(_UPSERT, self._pending.values())
        except sqlite3.Error as exc:
            raise self._error(exc, "record jobs") from None
        self._pending.clear()

    def _write(self, sql: str, params: tuple[Any, ...], doing: str) -> sqlite3.Cursor:
        self._wait_writer()
        db = self._conn
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            return db.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from None

    # -- reads (they see the batch) ------------------------------------------------------

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        self._wait_writer()
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._error(exc, "read") from None

    def _read_jobs(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        self._spill()
        return self._read(sql, params)

    def is_done(self, project_id: str, key: str) -> bool:
        row = self._pending.get((project_id, key)) or self._inflight.get((project_id, key))
        if row is not None:
            return row[_STATE] == "done"
        found = self._read(
            "SELECT 1 FROM jobs WHERE project_id = ? AND key = ? AND state = 'done'", (project_id, key)
        ).fetchone()
        return found is not None

    def done_keys(self, project_id: str) -> set[str]:
        """Keys of the project's done jobs: the ones a resumed run skips."""
        return self.keys(project_id, "done")

    def keys(self, project_id: str, outcome: str) -> set[str]:
        """Keys of the project's jobs with this outcome: "done", "failed" or "reused" (see `OUTCOMES`)."""
        return {key for (key,) in self._read_jobs(OUTCOMES[outcome], (project_id,))}

    def result(self, project_id: str, key: str) -> Any:
        """A done job's result; KeyError if the job is not done."""
        pending = self._pending.get((project_id, key)) or self._inflight.get((project_id, key))
        if pending is not None:
            row = (pending[_RESULT],) if pending[_STATE] == "done" else None
        else:
            row = self._read(
                "SELECT result FROM jobs WHERE project_id = ? AND key = ? AND state = 'done'",
                (project_id, key),
            ).fetchone()
        if row is None:
            raise KeyError(f"journal {self.path}: job {project_id!r}/{key!r} is not done")
        return _unpack(row[0])

    def failed_jobs(self, project_id: str) -> list[FailedJob]:
        """The project's permanently failed jobs, by key."""
        rows = self._read_jobs(
            "SELECT key, error, log, attempts FROM jobs WHERE project_id = ? AND state = 'failed' "
            "ORDER BY key",
            (project_id,),
        )
        return [FailedJob(key, error or "", log or "", attempts or 0) for key, error, log, attempts in rows]

    def counts(self, project_id: str) -> dict[str, int]:
        """{"done": n, "failed": n, "reused": n} for the project (done includes reused)."""
        row = self._read_jobs(
            "SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed'), "
            "count(*) FILTER (WHERE state = 'done' AND reused) FROM jobs WHERE project_id = ?",
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
        total = self._read_jobs(f"SELECT count(*) FROM jobs WHERE {where}", (project_id,)).fetchone()[0]
        rows = self._read(f"SELECT key, agent FROM jobs WHERE {where} ORDER BY key LIMIT ? OFFSET ?",
                          (project_id, limit, offset)).fetchall()
        return total, rows

    def lookup_cache(self, cache_key: str) -> CacheHit | None:
        """The most recent done job, in any project, recorded with this cache key."""
        row = self._read_jobs(
            "SELECT project_id, key, result FROM jobs WHERE cache_key = ? AND state = 'done' "
            "ORDER BY updated_at DESC LIMIT 1",
            (cache_key,),
        ).fetchone()
        return None if row is None else CacheHit(row[0], row[1], _unpack(row[2]))

    # -- commits -------------------------------------------------------------------------

    @property
    def unflushed(self) -> int:
        """Job writes not yet committed: what a crash now would lose."""
        return self._unflushed + self._inflight_count

    def flush_due_in(self, now: float | None = None) -> float | None:
        """Seconds until `tick` will commit the open batch (0 if due); None if nothing is open.

        A poll loop can use it as its timeout so a batch never waits much past its interval.
        """
        if self._unflushed == 0:
            return None
        now = self._clock() if now is None else now
        return max(0.0, self._batch_started + self.commit_interval - now)

    def tick(self, now: float | None = None) -> bool:
        """Commit the open batch if it is older than `commit_interval`; True if it committed.

        Call it from the loop on every turn; `now` is on the journal's clock (time.monotonic).
        """
        if self._writing is not None and self._writing.done():
            self._wait_writer()  # a failed background commit surfaces here
        due = self.flush_due_in(now)
        if due is None or due > 0:
            return False
        if self._writer is None:
            self.flush()
        elif self._writing is None:
            self._commit_in_background()
        else:
            return False  # the writer is still busy with the last batch: this one waits a turn
        return True

    def flush(self) -> None:
        """Commit everything written so far."""
        db = self._conn
        self._spill()
        if db.in_transaction:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(exc, "commit") from None
            log.debug("journal %s: committed %d job writes", self.path, self._unflushed)
        self._unflushed = 0

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
