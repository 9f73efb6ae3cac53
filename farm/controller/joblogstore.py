"""Job logs on disk, so a restarted controller still shows the attempts of its runs.

One SQLite file beside the journal (`FILE` in the controller's private state folder), a
table of its own rather than the journal's: log text is bulky, and in the journal's file it
would lengthen the journal's commits and checkpoints, which the loop waits for. A row per
kept attempt (an agent's message of plain first attempts, `put_pack`: one row for them all,
`farm.controller.joblogpacks`); the file mirrors each run's `farm.controller.joblogs.JobLogs`, which asks for
every attempt it keeps to be written and every one it lets go to be deleted, so the file
holds what memory holds, within the same bounds (attempts per job, bytes per run). Runs
whose logs stay: the journal's unfinished runs and the last `KEEP_RUNS` finished ones (what
the controller still answers for); the others' are deleted whenever a run begins.

Writes go through a queue to a writer thread of the store's own (the records `put` in one
loop turn as one piece, `push`, so a job costs no queue hand-off of its own; the attempts let go,
`drop`, go in it too, and the writer applies each attempt's last write of a piece), which commits what
collects within `COMMIT_INTERVAL_S` of the first as one transaction (as the journal batches
its job writes, so a crash loses at most that moment's attempts), at once when a full
`BATCH_OPS` waits; the loop never waits for them. The text the queue holds is bounded
(`BACKLOG_BYTES`, log and error characters): while the writer is behind (a slow or stalled
disk) a record that would pass it is still written, with its log text replaced by
`DROPPED_TEXT` and its error cut short, counted in `dropped` and logged at most once a
minute. Only the newest texts go so; every row, drop and prune is still applied in order,
so the file stays what memory holds but for those texts, and a later read finds the record. Reads (`load`, `attempts`) use a second connection, on the caller's thread. A file that
cannot be used is reported once and the logs stay in memory only: they are for people to
read, and never stop the controller (a full disk: a warning that names its folder as full).
"""

from __future__ import annotations

import errno
import logging
import operator
import queue
import sqlite3
import threading
import time
from itertools import repeat
from pathlib import Path
from typing import Any

from farm.controller import joblogpacks
from farm.controller.joblogpacks import Members, attempts_of, next_seq, packable
from farm.journalschema import no_room, sqlite_disk_full
from farm.paths import private_file
from farm.sqlitewal import immediate, switch_to_wal
from farm.sqlrows import BOUND, RowWriter

log = logging.getLogger(__name__)

FILE = "joblogs.sqlite"
KEEP_RUNS = 50  # finished runs whose logs stay (as many as farm.controller.history lists)
APPLICATION_ID = 0x464C4F47  # "FLOG": marks the file as farm's job logs
SCHEMA_VERSION = 2  # 2: `job_log_packs` beside `job_logs` (a file of 1 gains it when opened)
BATCH_OPS = 2000  # writes per transaction (at most one piece more), so a burst never holds the file long
PUSH_AT = 256  # records `put` collects before they go to the writer in one piece (else at `push`)
COMMIT_INTERVAL_S = 0.05  # writes collect this long into one transaction (a crash loses at most these)
BACKLOG_BYTES = 16 * 1024 * 1024  # log and error text (characters) waiting for the writer, at most
DROPPED_TEXT = "(log not kept on disk: the job-log writer was behind)"
ERROR_KEPT = 1024  # characters of a record's error still written when its text is dropped
DROP_LOG_EVERY_S = 60.0  # dropped texts are logged at most this often
#: an attempt's fields, in the order of the tuple `farm.controller.joblogs.JobLogs` keeps it as
FIELDS = ("attempt", "agent", "state", "error", "duration_s", "log")
_SCHEMA = """CREATE TABLE IF NOT EXISTS job_logs (
    run TEXT NOT NULL, key TEXT NOT NULL, attempt INTEGER NOT NULL, agent TEXT, state TEXT NOT NULL,
    error TEXT, duration_s REAL, log TEXT NOT NULL, PRIMARY KEY (run, key, attempt))"""
_PUT = ("INSERT OR REPLACE INTO job_logs (rowid, run, key, attempt, agent, state, error, duration_s, log) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")  # rowid: numbered with the packs (`joblogpacks.next_seq`)
_STATES = frozenset({"done", "failed", "requeued", "lost"})  # an attempt's states (`JobLogs.note`)
#: `_PUT` for many records a statement, in order (`farm.sqlrows`): agent, error, duration may be NULL;
#: a first attempt's number, its state and an empty log are written into the statement
_PUTS = RowWriter(_PUT.split("VALUES")[0], "", 9, (4, 6, 7),
                  lambda r: (r[4] is None, r[6] is None, r[7] is None,
                             1 if r[3] == 1 and r[3].__class__ is int else BOUND,
                             r[5] if r[5] in _STATES else BOUND, "" if r[8] == "" else BOUND),
                  literal=(3, 5, 8))
#: the shape of every record `put_fresh` queues without log text, by its state: a piece of only those
#: goes to the writer with it (no shape computed a row there)
_FRESH = {state: (False, True, False, 1, state, "") for state in _STATES}
_STOP = ("stop", None, None)
_DROP = "DELETE FROM job_logs WHERE run = ? AND key = ? AND attempt = ?"
_DROPS = object()  # a pushed piece's shape when it holds attempts let go (`drop`)
_PUTS_OPS = ("rows", "pack")  # the queued operations that `_queued_rows` counts
_ANSWERED = """SELECT project_id FROM projects WHERE status IS NULL UNION ALL SELECT project_id FROM
    (SELECT project_id FROM projects WHERE status IS NOT NULL ORDER BY finished_at DESC LIMIT ?)"""


class JobLogStore:
    """The job-log file and its writer thread; see the module docstring.

    :param path: the SQLite file, created (mode 0600) if missing.
    :param journal: the journal's file, read (read-only) to know which runs' logs to keep.
    :param backlog_bytes: log and error characters the queue may hold (see the module docstring).
    :raises sqlite3.Error, OSError, ValueError: the file cannot be used (see `open_beside`).
    """

    def __init__(self, path: Path, journal: Path | None = None, *,
                 backlog_bytes: int = BACKLOG_BYTES) -> None:
        self.path = path
        self.journal = journal
        self.backlog_bytes = backlog_bytes
        # text queued (counted by `put`, the loop) and written (by the writer): one writer each, no lock
        self._queued_text = self._written_text = 0
        self._pushed_text = 0  # of `_queued_text`, what went to the writer already (`push`)
        self._queued_rows = self._taken_rows = 0  # records pushed (the loop) and taken (the writer), alike
        self.dropped = 0  # records written without their log text, the writer being behind
        self._dropped_logged = 0  # `dropped` when last logged
        self._drop_logged_at = float("-inf")
        private_file(path)
        self._db = _connect(path, check_same_thread=False)  # the writer thread's
        try:
            _prepare(self._db, path)
            self._seq = next_seq(self._db)  # the writer's: the next row's or pack's number (their order)
            self._reader = _connect(path)  # the caller's (the controller's loop)
        except BaseException:
            self._db.close()
            raise
        self.failed: str | None = None  # the writer's error, once it gave up
        self._members = Members()  # the writer's index of packed attempts
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # records put and not queued yet: they go in one piece (one hand-off, not one per job) at `push`;
        # each as its run, key and attempt tuple, side by side
        self._put_runs: list[str] = []
        self._put_keys: list[str] = []
        self._put_attempts: list[tuple[Any, ...]] = []
        self._put_shape: tuple[Any, ...] | None = None  # the one shape of every record put so far, if known
        self._put_drops = False  # whether attempts let go (`drop`) are among them
        self._urgent = threading.Event()  # commit what is queued now, not at the interval's end
        self._thread = threading.Thread(target=self._write, name="farm-joblogs", daemon=True)
        self._thread.start()

    # -- writes (queued; the writer thread applies them in order) --------------------------

    def put(self, run: str, key: str, attempt: tuple[Any, ...] | dict[str, Any]) -> None:
        """Keep one attempt of ``run``'s job ``key``: a tuple of `FIELDS` (as `JobLogs` keeps it) or
        a record (a map of them); its text is replaced (`DROPPED_TEXT`) if the queue holds
        `backlog_bytes` of text already."""
        if attempt.__class__ is dict:
            attempt = tuple(attempt[f] for f in FIELDS)
        self.put_many(run, [key], [attempt])  # type: ignore[list-item]

    def put_many(self, run: str, keys: list[str], attempts: list[tuple[Any, ...]]) -> None:
        """`put` of each attempt (a tuple of `FIELDS`) of ``run``'s job of the same place in ``keys``,
        in order, in one call (a message's jobs). The attempts are queued as they are (no row made
        per record on the loop: the writer makes them)."""
        backlog, queued = self.backlog_bytes, self._queued_text
        runs, put_keys, put_attempts = self._put_runs, self._put_keys, self._put_attempts
        self._put_shape = None  # these records' shapes are the writer's to find (and the next piece's: push)
        for key, attempt in zip(keys, attempts, strict=True):
            error = attempt[3]
            size = len(attempt[5]) + (len(error) if error else 0)
            if queued - self._written_text + size > backlog:  # (the writer's count moves meanwhile)
                error = error and error[:ERROR_KEPT]
                attempt = (*attempt[:3], error, attempt[4], DROPPED_TEXT)
                size = len(DROPPED_TEXT) + len(error or "")
                self._dropped()
            queued += size
            runs.append(run)
            put_keys.append(key)
            put_attempts.append(attempt)
            if len(put_keys) >= PUSH_AT:
                self._queued_text = queued
                self.push()
                runs, put_keys, put_attempts = self._put_runs, self._put_keys, self._put_attempts
        self._queued_text = queued

    def put_fresh(self, run: str, keys: list[str], attempts: list[tuple[Any, ...]], text: int) -> None:
        """`put_many` of attempts without an error whose logs add up to ``text`` characters: when the
        queue has room for all that text, they are queued in C loops, in the same pieces."""
        if self._queued_text - self._written_text + text > self.backlog_bytes:  # some go without their text
            self.put_many(run, keys, attempts)
            return
        at, count = 0, len(keys)
        fresh = _FRESH.get(attempts[0][2]) if text == 0 and count and attempts[0][1] is not None else None
        while at < count:
            room = PUSH_AT - len(self._put_keys)
            if not self._put_keys:  # a piece begins
                self._put_shape = fresh
            elif self._put_shape is not fresh:
                self._put_shape = None
            piece = keys[at:at + room]
            self._put_runs.extend(repeat(run, len(piece)))
            self._put_keys.extend(piece)
            self._put_attempts.extend(attempts[at:at + room])
            if at == 0 and len(piece) == count:
                self._queued_text += text
            else:
                self._queued_text += sum(len(attempt[5]) for attempt in attempts[at:at + room])
            at += len(piece)
            if len(self._put_keys) >= PUSH_AT:
                self.push()

    def push(self) -> None:
        """Queue the records put since the last push, in one piece: the controller's loop calls it
        every turn, and every other write calls it first (the writer applies all in order)."""
        if self._put_keys:
            piece = (self._put_runs, self._put_keys, self._put_attempts,
                     _DROPS if self._put_drops else self._put_shape)
            self._put_runs, self._put_keys, self._put_attempts, self._put_shape = [], [], [], None
            self._put_drops = False
            self._queued_rows += len(piece[1])
            text, self._pushed_text = self._queued_text - self._pushed_text, self._queued_text
            self._queue.put(("rows", text, piece))  # with its text, for the writer's count of it

    def put_pack(self, run: str, agent: str, state: str, keys: list[str],
                 attempts: list[tuple[Any, ...]]) -> None:
        """`put_many` of one message's first attempts (``keys`` distinct), each done by ``agent`` in
        ``state`` without an error or log text: queued as one pack (`farm.controller.joblogpacks`),
        written as one row where the writer can (else a row each)."""
        if self._queued_text - self._written_text > self.backlog_bytes:  # as `put_many` would: text dropped
            self.put_many(run, keys, attempts)
            return
        self.push()
        self._queued_rows += 1
        self._queue.put(("pack", 0, (run, agent, state, keys, attempts)))

    def _dropped(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_EVERY_S:
            log.warning("job logs %s: the writer is behind (a slow disk?): %d job logs kept in memory "
                        "only, not on disk", self.path, self.dropped - self._dropped_logged)
            self._drop_logged_at, self._dropped_logged = now, self.dropped

    def drop(self, run: str, key: str, attempt: int) -> None:
        """Forget one attempt (`JobLogs` let it go): it goes with the records put, in their piece (as
        the 1-tuple of its number), so a run past its bytes hands the writer a piece a turn, not a
        piece and a delete per job."""
        self._put_runs.append(run)
        self._put_keys.append(key)
        self._put_attempts.append((attempt,))
        self._put_drops = True
        if len(self._put_keys) >= PUSH_AT:
            self.push()

    def begin(self, run: str) -> None:
        """A run begins (new or resumed): delete the logs of runs no longer answered for."""
        self.push()
        self._queue.put(("prune", run, None))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed; False if it was not in time."""
        done = threading.Event()
        self.push()
        self._queue.put(("wake", done.set, None))
        self._urgent.set()
        return done.wait(timeout)

    def close(self) -> None:
        """Commit what is queued and close the file; closing twice is harmless."""
        if self._thread.is_alive():
            self.push()
            self._queue.put(_STOP)
            self._urgent.set()
            self._thread.join(30)
        self._reader.close()

    # -- reads -------------------------------------------------------------------------------

    def load(self, run: str) -> list[tuple[str, dict[str, Any]]]:
        """A run's kept attempts as (key, record), in the order they were recorded."""
        return [(row[0], _entry(row)) for row in self._rows(run)]

    def attempts(self, run: str, key: str) -> list[dict[str, Any]]:
        """One job's kept attempts, oldest first."""
        return [_entry(row) for row in sorted(self._rows(run, key), key=operator.itemgetter(1))]

    def _rows(self, run: str, key: str | None = None) -> list[tuple[Any, ...]]:
        try:
            self._reader.execute("BEGIN")  # rows and packs from one snapshot (the writer commits meanwhile)
            return attempts_of(self._reader, run, key)
        except sqlite3.Error as exc:  # logs are for people: a damaged file never stops a run
            log.warning("job logs %s: cannot read (%s); showing none from it", self.path, exc)
            return []
        finally:
            if self._reader.in_transaction:  # a read: nothing to keep
                self._reader.execute("ROLLBACK")

    # -- the writer thread ---------------------------------------------------------------------

    def _write(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            writes = _writes(batch[0])
            # what else comes meanwhile joins its transaction, unwoken per write; not when a full batch waits
            if (batch[0][0] in ("sql", "rows", "pack")
                    and self._queued_rows - self._taken_rows + self._queue.qsize() < BATCH_OPS):
                self._urgent.wait(COMMIT_INTERVAL_S)  # a flush or close cuts it short
            self._urgent.clear()
            while writes < BATCH_OPS:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                writes += _writes(batch[-1])
            self._taken_rows += sum(len(op[2][1]) if op[0] == "rows" else 1
                                    for op in batch if op[0] in _PUTS_OPS)
            stop = any(op is _STOP for op in batch)
            self._apply([op for op in batch if op is not _STOP])
            self._written_text += sum(op[1] for op in batch if op[0] == "rows")  # records go in pieces
        self._db.close()

    def _apply(self, batch: list[tuple[str, Any, Any]]) -> None:
        if self.failed is None:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                sql, rows = None, []  # runs of one statement go in one executemany, in order
                shapes: list[Any] = []  # of the records in rows
                for kind, what, args in batch:
                    if kind == "sql" and what == sql:
                        rows.append(args)
                        continue
                    if kind == "pack":
                        joined = packable(args[3], durations := [a[4] for a in args[4]])
                        if joined is None or args[1].__class__ is not str:  # a row each, then
                            kind, args = "rows", ([args[0]] * len(args[3]), args[3], args[4], None)
                    if kind == "rows" and sql is _PUT and args[3] is not _DROPS:
                        rows += self._records(args, shapes)
                        continue
                    if rows:
                        _run(db, sql, rows, shapes)
                    if kind == "rows" and args[3] is _DROPS:
                        self._settle(db, args)
                        sql, rows = None, []
                    elif kind == "rows":
                        shapes = []
                        sql, rows = _PUT, self._records(args, shapes)
                    elif kind == "pack":
                        self._members.add(db, self._seq, *args[:4], joined, durations)
                        self._seq += 1
                        sql, rows = None, []
                    else:
                        sql, rows = (what, [args]) if kind == "sql" else (None, [])
                    if kind == "prune":
                        self._prune(what)
                if rows:
                    _run(db, sql, rows, shapes)
                self._members.rewrite(db)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._members.rolled_back()
                self.failed = str(exc)
                if sqlite_disk_full(exc, self.path.parent):  # the disk's, not the file's: said as such
                    log.warning("job logs %s: %s; job logs are kept in memory only from now on", self.path,
                                no_room(self.path.parent, exc))
                else:
                    log.error("job logs %s: cannot write (%s); job logs are kept in memory only from now on",
                              self.path, exc)
        # flush() callers: what they queued before is committed (or never will be)
        for kind, wake, _ in batch:
            if kind == "wake":
                wake()

    def _records(self, piece: tuple[list[str], list[str], list[tuple[Any, ...]], Any],
                 shapes: list[Any]) -> list[Any]:
        """A pushed piece's rows for `_PUT`: (rowid, run, key, *attempt) each, numbered on; their
        shapes added to `shapes`."""
        runs, keys, attempts, shape = piece
        seq, self._seq = self._seq, self._seq + len(keys)
        rows = list(map(operator.add, zip(range(seq, self._seq), runs, keys, strict=True), attempts))  # in C
        shapes += repeat(shape, len(rows)) if shape is not None else map(_PUTS.shape, rows)
        return rows

    def _settle(self, db: sqlite3.Connection,
                piece: tuple[list[str], list[str], list[tuple[Any, ...]], Any]) -> None:
        """A piece with attempts let go among those put: what each attempt's last write in it leaves
        (a put's row, or none), its deletes in one statement and its rows many a statement: a put and
        a delete of one attempt, in whichever order, no longer meet. Each put is numbered as in
        order (`_records`)."""
        runs, keys, attempts, _ = piece
        names = list(zip(runs, keys, map(operator.itemgetter(0), attempts), strict=True))
        last = dict(zip(names, range(len(names))))  # each attempt's last write here
        puts, gone = [], []
        seq = self._seq
        for at, (name, attempt) in enumerate(zip(names, attempts, strict=True)):
            if len(attempt) == 1:  # let go
                if name[2] == 1:
                    self._members.forget(db, name[0], name[1])  # out of its pack too, if packed
                if last[name] == at:
                    gone.append(name)
            else:
                if last[name] == at:
                    puts.append((seq, name[0], name[1], *attempt))
                seq += 1
        self._seq = seq
        db.executemany(_DROP, gone)
        _PUTS.write(db, puts, ordered=True)

    def _prune(self, beginning: str) -> None:  # in the writer thread, inside its transaction
        answered = _answered_runs(self.journal) if self.journal is not None else None
        if answered is None:
            return
        keep = {beginning, *answered}
        gone = [run for run in joblogpacks.stored_runs(self._db) if run not in keep]
        self._db.executemany("DELETE FROM job_logs WHERE run = ?", ((run,) for run in gone))
        self._members.prune(self._db, gone)
        if gone:
            log.debug("job logs %s: deleted the logs of %d runs no longer listed", self.path, len(gone))


def _run(db: sqlite3.Connection, sql: str, rows: list[Any], shapes: list[Any]) -> None:
    """One statement over rows, in order: the records many a statement (`_PUTS`, with their shapes),
    the rest one each."""
    if sql is _PUT:
        _PUTS.write(db, rows, ordered=True, shapes=shapes)
    else:
        db.executemany(sql, rows)


def _writes(op: tuple[str, Any, Any]) -> int:
    """Rows one queued operation writes (a pushed piece of records counts each)."""
    return len(op[2][1]) if op[0] == "rows" else 1  # a pack is one row


def open_beside(journal: Path) -> JobLogStore | None:
    """The job-log store beside ``journal`` (in the same private folder); None, with the reason
    logged, if its file cannot be used (logs then stay in memory only)."""
    path = journal.with_name(FILE)
    try:
        return JobLogStore(path, journal)
    except (sqlite3.Error, OSError, ValueError) as exc:
        if isinstance(exc, sqlite3.Error) and sqlite_disk_full(exc, path.parent):  # no file to move away
            log.warning("job logs %s: %s; job logs are kept in memory only", path, no_room(path.parent, exc))
        elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.warning("job logs %s: the disk of %s is full (%s); job logs are kept in memory only", path,
                        path.parent, exc.strerror)
        else:
            log.error("job logs %s: cannot use this file (%s); job logs are kept in memory only "
                      "(move the file away to start afresh)", path, exc)
        return None


def _answered_runs(journal: Path) -> list[str] | None:
    """The journal's unfinished runs and its last `KEEP_RUNS` finished ones (read-only, committed
    state); None if it cannot be read (nothing is pruned then)."""
    try:
        db = sqlite3.connect(f"{journal.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return [run for (run,) in db.execute(_ANSWERED, (KEEP_RUNS,))]
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.warning("job logs: cannot read the journal %s to prune old runs' logs: %s", journal, exc)
        return None


def _connect(path: Path, **options: Any) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=10, **options)


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0 and version == 0 and not db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    elif app_id != APPLICATION_ID:
        raise ValueError("an SQLite database, but not farm's job logs")
    elif version not in (1, SCHEMA_VERSION):  # 1: its rows are 2's; the packs' table is added below
        raise ValueError(f"schema version {version}, this farm reads {SCHEMA_VERSION}")
    if switch_to_wal(db, path).lower() != "wal":
        raise ValueError("cannot switch to WAL mode")
    db.execute("PRAGMA synchronous=NORMAL")
    with immediate(db):
        for statement in (_SCHEMA, *joblogpacks.SCHEMA.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    _key, attempt, agent, state, error, duration_s, text = row
    return {"attempt": attempt, "agent": agent, "state": state, "error": error, "duration_s": duration_s,
            "log": text}
