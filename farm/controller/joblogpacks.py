"""A message's plain first attempts in the job-log file as one row, a pack, not one row each.

Most attempts an agent's RESULTS bring are alike: each job's first attempt, done (or in one other
state) by that agent, without an error or log text, with a duration. `JobLogs.notes_from` keeps such
a message's attempts in one call, and the store's writer writes them as one row of `job_log_packs`:
(seq, run, agent, state, keys joined by newlines, durations as little-endian doubles). A key holds
no newline (`farm.ids.check_key` refuses control characters); a message with one is written a row
each. Writing a pack costs its one insert and two C joins, against ~1.5 us per row in `job_logs`.

The file still holds what memory holds. `seq` shares the rowids of `job_logs` (the writer numbers
both, `next_seq`), so a run's attempts read back in the order they were recorded. An attempt let go
(`JobLogStore.drop`) is taken out of its pack: the writer finds it through `Members`, an index of
each run's packed keys that it builds from the file the first time a run lets an attempt go, and
keeps for the runs written since the last prune; the packs touched are rewritten once a transaction.
A reader that finds an attempt twice (in a pack and a row: only if memory and the file parted ways)
takes the later, as a replacing row would have been.
"""

from __future__ import annotations

import math
import sqlite3
import sys
from array import array
from collections.abc import Iterable
from itertools import repeat
from typing import Any

SCHEMA = """CREATE TABLE IF NOT EXISTS job_log_packs (
    seq INTEGER PRIMARY KEY, run TEXT NOT NULL, agent TEXT NOT NULL, state TEXT NOT NULL,
    keys TEXT NOT NULL, durations BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS job_log_packs_run ON job_log_packs (run)"""
_INSERT = "INSERT INTO job_log_packs (seq, run, agent, state, keys, durations) VALUES (?, ?, ?, ?, ?, ?)"
_ROWS = "SELECT rowid, key, attempt, agent, state, error, duration_s, log FROM job_logs WHERE run = ?"
_SWAP = sys.byteorder == "big"  # durations are stored little-endian


def next_seq(db: sqlite3.Connection) -> int:
    """The first number after every row's and pack's in the file (their shared order)."""
    return 1 + db.execute("SELECT max(coalesce((SELECT max(rowid) FROM job_logs), 0), "
                          "coalesce((SELECT max(seq) FROM job_log_packs), 0))").fetchone()[0]


def packable(keys: list[str], durations: list[Any]) -> str | None:
    """The keys joined, if these attempts can go as a pack: no key with a newline, every duration a
    float (an int or a huge one is left to a row's own binding); else None."""
    joined = "\n".join(keys)
    if joined.count("\n") != len(keys) - 1 or not _FLOAT.issuperset(map(type, durations)):
        return None
    return joined


_FLOAT = frozenset({float})


def _durations_blob(durations: list[float]) -> bytes:
    packed = array("d", durations)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def _durations(blob: bytes) -> list[float | None]:
    packed = array("d")
    packed.frombytes(blob)
    if _SWAP:
        packed.byteswap()
    # SQLite keeps a NaN bound to a REAL column as NULL: a row would read back None
    return [None if math.isnan(d) else d for d in packed]


class Members:
    """The writer thread's index of packed keys, per run: key -> its pack's seq; the packs to rewrite
    without the attempts let go (`forget`), at `rewrite` (before the transaction commits)."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, int]] = {}
        self._touched: set[str] = set()  # runs written since the last prune: their index stays
        self._gone: dict[int, set[str]] = {}  # seq -> keys to take out of that pack

    def add(self, db: sqlite3.Connection, seq: int, run: str, agent: str, state: str, keys: list[str],
            joined: str, durations: list[float]) -> None:
        """Write one pack (in the open transaction)."""
        db.execute(_INSERT, (seq, run, agent, state, joined, _durations_blob(durations)))
        members = self._runs.get(run)
        if members is not None:  # indexed: keep it whole
            self._touched.add(run)
            self._index(members, seq, keys)

    def forget(self, db: sqlite3.Connection, run: str, key: str) -> None:
        """The run's job ``key`` let its first attempt go: out of its pack, if one holds it."""
        members = self._runs.get(run)
        if members is None:
            members = self._runs[run] = {}
            for seq, joined in db.execute("SELECT seq, keys FROM job_log_packs WHERE run = ? ORDER BY seq",
                                          (run,)):
                self._index(members, seq, joined.split("\n"))
        self._touched.add(run)
        seq = members.pop(key, None)
        if seq is not None:
            self._gone.setdefault(seq, set()).add(key)

    def _index(self, members: dict[str, int], seq: int, keys: list[str]) -> None:
        if not members.keys().isdisjoint(keys):  # an older pack holds one again: the newer one counts
            for key in keys:
                older = members.get(key)
                if older is not None:
                    self._gone.setdefault(older, set()).add(key)
        members.update(zip(keys, repeat(seq)))

    def rewrite(self, db: sqlite3.Connection) -> None:
        """Rewrite the packs that lost attempts (deleted when none is left)."""
        for seq, gone in self._gone.items():
            row = db.execute("SELECT keys, durations FROM job_log_packs WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                continue
            kept = [(k, d) for k, d in zip(row[0].split("\n"), _durations(row[1]), strict=True)
                    if k not in gone]
            if kept:
                db.execute("UPDATE job_log_packs SET keys = ?, durations = ? WHERE seq = ?",
                           ("\n".join(k for k, _ in kept),
                            _durations_blob([math.nan if d is None else d for _, d in kept]), seq))
            else:
                db.execute("DELETE FROM job_log_packs WHERE seq = ?", (seq,))
        self._gone.clear()

    def rolled_back(self) -> None:
        """The transaction failed: the index no longer says what the file holds."""
        self._runs.clear()
        self._gone.clear()

    def prune(self, db: sqlite3.Connection, gone: Iterable[str]) -> None:
        """Delete the packs of runs no longer answered for; keep the index of runs written lately."""
        gone = set(gone)
        db.executemany("DELETE FROM job_log_packs WHERE run = ?", ((run,) for run in gone))
        self._runs = {run: members for run, members in self._runs.items()
                      if run in self._touched and run not in gone}
        self._touched = set()


def stored_runs(db: sqlite3.Connection) -> list[str]:
    """Every run with an attempt in the file."""
    return [run for (run,) in db.execute("SELECT run FROM job_logs UNION SELECT run FROM job_log_packs")]


def attempts_of(db: sqlite3.Connection, run: str, key: str | None = None) -> list[tuple[Any, ...]]:
    """The run's stored attempts (one job's, with ``key``) as (key, attempt, agent, state, error,
    duration_s, log), in the order they were recorded; an attempt found twice read as its later."""
    if key is None:
        rows = db.execute(_ROWS, (run,)).fetchall()
        packs = db.execute("SELECT seq, agent, state, keys, durations FROM job_log_packs WHERE run = ?",
                           (run,)).fetchall()
    else:
        rows = db.execute(_ROWS + " AND key = ?", (run, key)).fetchall()
        packs = db.execute("SELECT seq, agent, state, keys, durations FROM job_log_packs WHERE run = ? "
                           "AND instr(char(10) || keys || char(10), ?)", (run, f"\n{key}\n")).fetchall()
    found = [((row[0], 0), row[1:]) for row in rows]
    for seq, agent, state, joined, blob in packs:
        keys = joined.split("\n")
        found += [((seq, at), (k, 1, agent, state, None, d, ""))
                  for at, (k, d) in enumerate(zip(keys, _durations(blob), strict=True)) if key in (None, k)]
    found.sort(key=lambda item: item[0])
    latest = {row[:2]: place for place, row in found}  # (key, attempt) -> its last place
    return [row for place, row in found if latest[row[:2]] == place]
