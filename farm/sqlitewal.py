"""Switching an SQLite file to WAL while other processes or threads open it too.

``PRAGMA journal_mode=WAL`` on a file still in rollback mode reads its header under a
shared lock, then asks for the write lock to mark the header WAL. A connection that already
holds a lock and asks for a stronger one is not let wait (two of them would wait for each
other for ever): SQLite answers "database is locked" at once, never calling the busy
handler, so ``timeout=`` does not cover it (sqlite.org/c3ref/busy_handler.html). Two agents
opening one fresh cache at the same moment hit exactly that, and a job failed.

`switch_to_wal` waits instead, through the busy handler: ``BEGIN IMMEDIATE`` asks for the
write lock with no lock held, so SQLite waits (up to the connection's timeout) for the
connection converting the file, or creating its schema, to commit; then it tries again. A
file already in WAL needs no write lock: its header says so, and the pragma returns at once.

`leave_wal` goes back (an MBTiles file is handed over as one plain file), waiting for readers.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

TRIES = 20  # each try after the first waits for another connection's commit: more is a file held, not a race


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return (code & 0xFF) == sqlite3.SQLITE_BUSY if code is not None else str(exc) == "database is locked"


def switch_to_wal(db: sqlite3.Connection, path: Path | str) -> str:
    """Run ``PRAGMA journal_mode=WAL`` on ``db`` (out of any transaction); returns the mode SQLite
    answers (``"wal"``; a caller that needs WAL checks it).

    Bounded: each wait lasts the connection's busy timeout (``timeout=`` of `sqlite3.connect`)
    at most, and none starts once that long has gone in all (so twice it, at worst) or after
    `TRIES` tries. Raises `sqlite3.OperationalError` naming ``path`` and what it waited for if the
    file stays locked, or any other error of the pragma as it comes.
    """
    started = time.monotonic()
    timeout = db.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
    tries = 0
    while True:
        tries += 1
        try:
            return str(db.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or db.in_transaction:
                raise
            if tries == TRIES or time.monotonic() - started >= timeout:
                raise _still_locked(path, tries, started, exc) from exc
            log.debug("%s: another connection holds it while switching it to WAL or creating it (%s); "
                      "waiting for its commit (try %d)", path, exc, tries)
        try:  # out of any lock now: the busy handler waits here, up to the connection's timeout
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            raise _still_locked(path, tries, started, exc) from exc
        db.execute("ROLLBACK")


def _still_locked(path: Path | str, tries: int, started: float, exc: Exception) -> sqlite3.OperationalError:
    return sqlite3.OperationalError(
        f"{path}: still locked by another connection after {tries} tries over "
        f"{time.monotonic() - started:.1f} s of switching it to WAL ({exc})")


#: how long `leave_wal` waits for readers (a dashboard's tile preview reads in milliseconds)
LEAVE_WAIT_S = 10.0


def leave_wal(db: sqlite3.Connection, path: Path | str, wait_s: float = LEAVE_WAIT_S) -> None:
    """Fold the WAL into ``path`` and switch it back to a rollback journal (``-wal``, ``-shm`` go).

    That switch needs the file to itself, and SQLite refuses it at once, without its busy
    handler, while any other connection has the file open (a dashboard's read of one tile):
    then the WAL would stay beside the file, and the file alone (a download, a copy) would lack
    the tiles in it. So a busy answer is tried again every 10 ms for up to ``wait_s`` seconds.
    Raises `sqlite3.OperationalError` naming ``path`` if the file stays held that long.
    """
    started = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            db.execute("PRAGMA journal_mode=DELETE")
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or db.in_transaction:
                raise
            if time.monotonic() - started >= wait_s:
                raise sqlite3.OperationalError(
                    f"{path}: another connection held it for {time.monotonic() - started:.1f} s "
                    f"({tries} tries) while its WAL was to be folded in ({exc})") from exc
            if tries == 1:
                log.debug("%s: another connection reads it; its WAL is folded in when it is done", path)
        time.sleep(0.01)  # a reader holds no lock SQLite lets us wait on here: poll, bounded


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction begun with the write lock (``BEGIN IMMEDIATE``: no upgrade from a read
    lock to fail on, as above), committed when the block ends, rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
