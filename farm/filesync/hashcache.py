"""A persistent quick-check cache so unchanged files are not hashed again.

Keyed by the file's real path and checked against (size, mtime_ns, inode), like git's
index and Syncthing's database. A file modified within `RACY_NS` of being hashed could
change again without its mtime moving (coarse timestamps), so such results are not
cached: they are hashed again next time ("racy git").
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from farm.paths import private_file

RACY_NS = 2_000_000_000

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        private_file(self.path)  # it names every file hashed, so it stays its owner's
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int, int, int, int, bytes]] = []
        self.hits = 0
        self.misses = 0

    @classmethod
    def in_dir(cls, state_dir: Path | str) -> HashCache:
        """The cache kept in a state folder (a project's ``.farm/`` or an agent's cache)."""
        return cls(Path(state_dir) / "hashcache.sqlite")

    def get(self, real_path: str, st: os.stat_result, block_size: int) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT size, mtime_ns, ino, block_size, hashes FROM hashes WHERE path = ?", (real_path,)
            ).fetchone()
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

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)", self._pending)
        self._db.execute("COMMIT")
        self._pending.clear()

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
