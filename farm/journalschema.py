"""The journal's file format: its SQLite schema and the checks and additions made on opening,
the row layout of a job write, the records read back, and the msgpack encoding of stored values.

`farm.journal` reads and writes through these; nothing else touches the file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from farm.errors import ControlError, FarmError
from farm.paths import private_file
from farm.sqlitewal import immediate, switch_to_wal

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: plain successes kept a group a row (`done_groups`); `jobs` a view
APPLICATION_ID = 0x4641524D  # "FARM": marks the file as ours, see `PRAGMA application_id`
PROJECT_STATUSES = frozenset({"done", "failed", "cancelled"})

_PROJECTS = """
CREATE TABLE projects (
    project_id   TEXT PRIMARY KEY,
    wire         BLOB NOT NULL,     -- msgpack of the project definition
    priority     INTEGER NOT NULL,
    submitted_at REAL NOT NULL,
    status       TEXT,              -- NULL while unfinished
    finished_at  REAL,
    summary      BLOB               -- msgpack
)"""
_JOB_ROWS = """
CREATE TABLE job_rows (
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
    duration   REAL,                -- failed jobs: their last attempt's run time, seconds
    PRIMARY KEY (project_id, key)
) WITHOUT ROWID"""
# No index on state: it would cost ~40 % of write speed, and done_keys reads one project's range.
_CACHE_INDEX = "CREATE INDEX jobs_by_cache_key ON job_rows (cache_key) WHERE cache_key IS NOT NULL"
# Schema 2. A batch's plain successes (done, rendered, no result, no cache key, no attempts before,
# their running row in the same batch) of one project, agent and time are one row here: the JSON
# array of their [key, lease] pairs. A job's state is its newest write (`updated_at`, which the
# journal keeps increasing): its row in job_rows or its newest group. Reads on the journal's own
# connection fold a project's groups into job_rows first (`FOLD`); others read the view `jobs`.
_DONE_GROUPS = """
CREATE TABLE done_groups (
    project_id TEXT NOT NULL,
    agent      TEXT NOT NULL,
    updated_at REAL NOT NULL,
    jobs       TEXT NOT NULL        -- JSON: [[key, lease], ...]
)"""
_GROUPS_INDEX = "CREATE INDEX done_groups_by_project ON done_groups (project_id)"
_GROUPED = """SELECT g.project_id AS project_id, json_extract(j.value, '$[0]') AS key,
    json_extract(j.value, '$[1]') AS lease, g.agent AS agent, g.updated_at AS updated_at
    FROM done_groups g, json_each(g.jobs) j"""
_COLUMNS = ("project_id, key, state, lease, agent, result, cache_key, error, log, attempts, updated_at, "
            "reused, duration")
#: every job's current row, as schema 1's table held them (for other connections, tests, scripts)
_VIEW = f"""
CREATE VIEW jobs ({_COLUMNS}) AS
WITH latest AS (SELECT project_id, key, lease, agent, updated_at FROM (
    SELECT *, row_number() OVER (PARTITION BY project_id, key ORDER BY updated_at DESC) AS n
    FROM ({_GROUPED})) WHERE n = 1)
SELECT r.project_id, r.key, r.state, r.lease, r.agent, r.result, r.cache_key, r.error, r.log, r.attempts,
    r.updated_at, r.reused, r.duration
    FROM job_rows r LEFT JOIN latest d ON d.project_id = r.project_id AND d.key = r.key
    WHERE d.key IS NULL OR d.updated_at < r.updated_at
UNION ALL
SELECT d.project_id, d.key, 'done', d.lease, d.agent, NULL, NULL, NULL, NULL, r.attempts, d.updated_at, 0,
    NULL FROM latest d LEFT JOIN job_rows r ON r.project_id = d.project_id AND r.key = d.key
    WHERE r.key IS NULL OR r.updated_at < d.updated_at"""
_SCHEMA = (_PROJECTS, _JOB_ROWS, _CACHE_INDEX, _DONE_GROUPS, _GROUPS_INDEX, _VIEW)
# Live control (a paused run, a draining agent): added beside schema 1, so older journals gain it
_CONTROLS = """CREATE TABLE IF NOT EXISTS controls (
    scope TEXT NOT NULL, id TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (scope, id)) WITHOUT ROWID"""

# Every job write is one upsert of the whole row. Lease, agent and attempts survive later
# states that do not carry them, so a done row still says who rendered it.
_CONFLICT = """
ON CONFLICT (project_id, key) DO UPDATE SET state = excluded.state,
    lease = coalesce(excluded.lease, lease), agent = coalesce(excluded.agent, agent),
    result = excluded.result, cache_key = excluded.cache_key, error = excluded.error,
    log = excluded.log, attempts = coalesce(excluded.attempts, attempts), updated_at = excluded.updated_at,
    reused = excluded.reused, duration = excluded.duration
"""
UPSERT = """
INSERT INTO job_rows (project_id, key, state, lease, agent, result, cache_key, error, log, attempts,
    updated_at, reused, duration)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""" + _CONFLICT
#: a group row (`done_groups`): project_id, agent, updated_at, the JSON of its [key, lease] pairs
GROUP_INSERT = "INSERT INTO done_groups (project_id, agent, updated_at, jobs) VALUES (?, ?, ?, ?)"
#: a project's groups into job_rows, oldest first (rowid order: a project's groups are inserted in time
#: order, and a new rowid is above every one there), each where it is newer than the job's row; then gone
FOLD = ("""INSERT INTO job_rows (project_id, key, state, lease, agent, updated_at, reused)
SELECT g.project_id, json_extract(j.value, '$[0]'), 'done', json_extract(j.value, '$[1]'), g.agent,
    g.updated_at, 0 FROM done_groups g, json_each(g.jobs) j WHERE g.project_id = ? ORDER BY g.rowid"""
        + _CONFLICT + "WHERE excluded.updated_at > job_rows.updated_at",
        "DELETE FROM done_groups WHERE project_id = ?")
ROW_STATE, ROW_LEASE, ROW_AGENT, ROW_RESULT, ROW_ATTEMPTS = 2, 3, 4, 5, 9  # positions in a row tuple
Row = tuple[
    str, str, str, str | None, str | None, bytes | None, str | None, str | None, str | None, int | None,
    float, int, float | None,
]
#: a run's job keys by outcome (`farm.controller.outcome.read_keys`: any connection); done includes reused
OUTCOMES = {
    "done": "SELECT key FROM jobs WHERE project_id = ? AND state = 'done'",
    "failed": "SELECT key FROM jobs WHERE project_id = ? AND state = 'failed'",
    "reused": "SELECT key FROM jobs WHERE project_id = ? AND state = 'done' AND reused",
}
#: the same on the journal's own connection, once the project's groups are folded (`FOLD`)
OWN_OUTCOMES = {outcome: sql.replace("FROM jobs", "FROM job_rows") for outcome, sql in OUTCOMES.items()}


class JournalError(FarmError):
    """The journal file cannot be opened, is not a farm journal, or cannot be written."""


class JournalDiskFull(JournalError, ControlError):
    """The journal cannot be opened: its disk is full. Code "controller_disk", as a controller
    refusing a submit for its own disk (`farm.cli.errors.error_code`)."""

    def __init__(self, message: str) -> None:
        ControlError.__init__(self, message, "controller_disk")


_SQLITE_IOERR, _SQLITE_FULL = 10, 13
NO_ROOM_BYTES = 64 * 1024  # less free than this on the folder's disk: full, as far as SQLite goes


def sqlite_disk_full(exc: sqlite3.Error, folder: Path) -> bool:
    """SQLite failed because the disk under ``folder`` is full: its FULL, or an I/O error (what a disk
    with no room at all gives, when not even a rollback journal can be made) where the OS says so."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # an extended code's low byte: the primary
    if code not in (_SQLITE_IOERR, _SQLITE_FULL):
        return False
    try:
        disk = os.statvfs(folder)
    except OSError:
        return code == _SQLITE_FULL
    return code == _SQLITE_FULL or disk.f_bavail * disk.f_frsize < NO_ROOM_BYTES


def no_room(folder: Path, exc: sqlite3.Error) -> str:
    """A disk found full by `sqlite_disk_full`, as people read it: the folder named, not the file blamed."""
    return f"the disk of {folder} is full ({exc})"


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
    duration: float | None = None  # its last attempt's, seconds (None: none ran, or an older journal)
    agent: str | None = None  # where it last ran


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A finished job whose result can stand in for a new job with the same cache key."""

    project_id: str
    key: str
    result: Any


def pack_value(value: Any, what: str) -> bytes | None:
    if value is None:  # most jobs return nothing: store NULL, skip the packer
        return None
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{what} cannot be stored in the journal (not msgpack-able): {exc}") from None


def unpack_value(blob: bytes | None) -> Any:
    return None if blob is None else msgpack.unpackb(blob, raw=False, strict_map_key=False)


def prepare(db: sqlite3.Connection, path: Path) -> None:
    """Check the file is a farm journal of a schema this farm reads (create it in an empty file,
    bring a schema 1 journal to 2), switch to WAL and add what was added beside schema 1; raises
    `JournalError` or `sqlite3.Error`."""
    # Read the identity before any PRAGMA that writes, so a foreign file is left untouched.
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0 and version == 0:
        _create(db, path)
    elif app_id != APPLICATION_ID:
        raise JournalError(f"journal {path}: an SQLite database, but not a farm journal")
    elif version > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path}: schema version {version} is newer than this farm's "
            f"({SCHEMA_VERSION}); upgrade farm or move the file away"
        )
    elif version < 1:
        raise JournalError(f"journal {path}: schema version {version} is not supported")
    try:
        db.execute("SELECT json_extract('[1]', '$[0]')")
    except sqlite3.OperationalError as exc:
        raise JournalError(f"journal {path}: this SQLite ({sqlite3.sqlite_version}) lacks JSON "
                           f"functions, which the journal's schema {SCHEMA_VERSION} needs ({exc})") from None
    mode = switch_to_wal(db, path)
    if str(mode).lower() != "wal":
        raise JournalError(f"journal {path}: cannot switch to WAL mode (got {mode!r})")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_CONTROLS)
    if version == 1:
        _upgrade(db, path)


def _upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Schema 1 to 2, in one transaction: its ``jobs`` table becomes ``job_rows`` (the columns added
    beside schema 1 added first), ``done_groups`` and the view ``jobs`` are made. A farm before
    schema 2 then refuses the file as newer than itself, so the schema 1 file is first copied
    beside it (`kept_schema_1`): stopped, an older farm reads that copy moved back in its place."""
    kept = kept_schema_1(path)
    if not kept.exists():  # a copy an earlier try made is the file as it was
        private_file(kept)
        target = sqlite3.connect(kept)
        try:
            db.backup(target)  # SQLite's online backup: the committed file, its WAL included
        finally:
            target.close()
        log.warning("journal %s: brought to schema %d; the schema 1 file is kept as %s (for an older "
                    "farm: move it back while the controller is stopped; runs after this are not in it)",
                    path, SCHEMA_VERSION, kept)
    with immediate(db):
        if db.execute("PRAGMA user_version").fetchone()[0] == 1:  # re-read under the write lock
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            if "reused" not in columns:  # a journal from before it knew reuse
                db.execute("ALTER TABLE jobs ADD COLUMN reused INTEGER NOT NULL DEFAULT 0")
            if "duration" not in columns:  # a journal from before it kept failed jobs' times
                db.execute("ALTER TABLE jobs ADD COLUMN duration REAL")
            db.execute("ALTER TABLE jobs RENAME TO job_rows")
            for statement in (_DONE_GROUPS, _GROUPS_INDEX, _VIEW):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def kept_schema_1(path: Path) -> Path:
    """Where a schema 1 journal at `path` is copied before it is brought to schema 2."""
    return path.with_name(path.name + ".schema1")


def _create(db: sqlite3.Connection, path: Path) -> None:
    with immediate(db):
        # Re-read under the write lock: another process may have created it meanwhile.
        if db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
            return
        if db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
            raise JournalError(f"journal {path}: an SQLite database, but not a farm journal")
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    log.debug("journal %s: created (schema %d)", path, SCHEMA_VERSION)
