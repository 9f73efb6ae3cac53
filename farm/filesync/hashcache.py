"""A persistent quick-check cache so unchanged files are not hashed again.

Keyed by the file's real path and checked against (size, mtime_ns, inode), like git's
index and Syncthing's database. A file modified within `RACY_NS` of being hashed could
change again without its mtime moving (coarse timestamps), so such results are not
cached: they are hashed again next time ("racy git").

It is a cache: a write its disk refuses (full, read-only, failing) must fail nothing. The hashes not
written are kept in memory for this process (`MEMORY_MAX` at most), said once, and written with
the next flush that succeeds.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from farm.paths import private_file
from farm.sqlitewal import switch_to_wal

log = logging.getLogger(__name__)

RACY_NS = 2_000_000_000
MEMORY_MAX = 65536  # hashes kept in memory while the file refuses them; then the oldest are dropped

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER,
    block_size INTEGER, hashes BLOB
)
"""


class HashCache:
    """SQLite file of block hashes per file; ``hits`` and ``misses`` count lookups."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int, int, int, int, bytes]] = []
        self._memory: dict[str, tuple[str, int, int, int, int, bytes]] = {}  # refused by the file
        self._refused: str | None = None  # why the file refuses writes, said once
        self.hits = 0
        self.misses = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open(self.path)
        except (OSError, sqlite3.OperationalError) as exc:  # a disk with no room for it: in memory
            self._said(exc)
            self._db = self._open(":memory:")

    @staticmethod
    def _open(path: Path | str) -> sqlite3.Connection:
        if path != ":memory:":
            private_file(path)  # it names every file hashed, so it stays its owner's
        db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            switch_to_wal(db, path)  # two agents sharing a cache folder may open it at once
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    @classmethod
    def in_dir(cls, state_dir: Path | str) -> HashCache:
        """The cache kept in a state folder (a project's ``.farm/`` or an agent's cache)."""
        return cls(Path(state_dir) / "hashcache.sqlite")

    def get(self, real_path: str, st: os.stat_result, block_size: int) -> bytes | None:
        with self._lock:
            kept = self._memory.get(real_path)
            row = kept[1:] if kept is not None else self._select(real_path)
        if row and tuple(row[:4]) == (st.st_size, st.st_mtime_ns, st.st_ino, block_size):
            self.hits += 1
            return bytes(row[4])
        self.misses += 1
        return None

    def put(
        self, real_path: str, st: os.stat_result, block_size: int, hashes: bytes, started_ns: int
    ) -> None:
        """Remember hashes read from a file whose stat was ``st`` when hashing began at ``started_ns``."""
        if st.st_mtime_ns >= started_ns - RACY_NS:
            return  # racily clean: a write in the same timestamp tick would go unnoticed
        with self._lock:
            self._pending.append((real_path, st.st_size, st.st_mtime_ns, st.st_ino, block_size, hashes))
            if len(self._pending) >= 512:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _select(self, real_path: str) -> tuple | None:
        try:
            return self._db.execute(
                "SELECT size, mtime_ns, ino, block_size, hashes FROM hashes WHERE path = ?", (real_path,)
            ).fetchone()
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as exc:  # a disk failing to read: the file is hashed again
            self._said(exc)
            return None

    def _flush_locked(self) -> None:
        rows = [*self._memory.values(), *self._pending]
        if not rows:
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as exc:  # the disk full, read-only or failing: keep them here
            self._rollback()
            self._said(exc)
            for row in self._pending:
                self._memory.pop(row[0], None)  # the newest last (the dict's order is its age)
                self._memory[row[0]] = row
            while len(self._memory) > MEMORY_MAX:
                del self._memory[next(iter(self._memory))]
        else:
            self._memory.clear()
            self._refused = None
        self._pending.clear()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass  # SQLite rolled it back itself

    def _said(self, exc: Exception) -> None:
        if self._refused is None:
            self._refused = str(exc)
            log.info("hash cache %s: %s; the hashes are kept in memory meanwhile (files may be "
                        "hashed again)", self.path, exc)

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def now_ns() -> int:
    return time.time_ns()
