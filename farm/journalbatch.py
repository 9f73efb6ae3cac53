"""Batched job writes for `farm.journal.Journal`: the batch collecting in memory, the commit
when it is due (by age or size), and, with ``background=True``, the writer thread that commits
a due batch while the loop goes on. The module docstring of `farm.journal` gives the rules.

With the writer thread, a job's *running* row written in the batch being committed stays
for the next batch instead (once): most short jobs finish by then, and their row is written
once, as done, instead of an insert and an update (an update costs SQLite about 2.5x an
insert). A running row means "not done", which is what no row means after a restart too;
the row is still uncommitted, so reads see it and a crash loses it as part of the open batch.

The writer thread writes the plain successes of each `jobs_done` call (started in the batch)
as one group row (`farm.journalrows.write_groups`; schema 2): a row of a few keys instead of a
row a job. Reads on the journal's connection fold a project's groups into its job rows first
(`_fold`), once per commit that gave it groups; job times only increase, so a group and a row
of the same job are told apart by them.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from farm.journalrows import Done, write_groups, write_rows
from farm.journalschema import FOLD, ROW_AGENT, ROW_ATTEMPTS, ROW_LEASE, ROW_STATE, JournalError, Row

log = logging.getLogger(__name__)


class BatchedJobs:
    """The job-row writer mixed into `Journal`; needs its ``path``, ``_db``, ``_conn`` and ``_error``."""

    def _init_batch(self, commit_interval: float, max_batch: int, clock: Callable[[], float],
                    background: bool) -> None:
        self.commit_interval = commit_interval
        self.max_batch = max_batch
        self._clock = clock
        self._pending: dict[tuple[str, str], Row] = {}  # the batch not yet in the transaction
        self._unflushed = 0  # job writes not yet committed, in `_pending` or in the transaction
        self._batch_started = 0.0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="farm-journal") if background else None
        self._writing: Future[None] | None = None  # the batch the writer thread commits now
        self._inflight: dict[tuple[str, str], Row] = {}  # its rows, which reads still see
        self._inflight_count = 0
        self._young: list[tuple[str, str]] = []  # running rows written since the last commit (see above)
        self._done: list[Done] = []  # the batch's `jobs_done` calls, for the writer's groups
        self._unfolded: set[str] = set()  # projects that may have groups in the file (`_fold`)
        self._last_time = 0.0  # the newest job time given (`_time`)

    def _time(self) -> float:
        """Now (`time.time`), later than every job time given before: a job's newest write is its state."""
        now = time.time()
        if now <= self._last_time:
            now = math.nextafter(self._last_time, math.inf)
        self._last_time = now
        return now

    def _batched(self, project_id: str, key: str) -> Row | None:
        """The job's row in the batch or in the commit under way; None if it has none there."""
        return self._pending.get((project_id, key)) or self._inflight.get((project_id, key))

    def _job(self, project_id: str, key: str, state: str, lease: str | None, agent: str | None,
             result: bytes | None, cache_key: str | None, error: str | None, log: str | None,
             attempts: int | None, reused: bool = False, duration: float | None = None) -> None:
        if self._db is None:
            raise JournalError(f"journal {self.path}: used after close()")
        if self._unflushed == 0:
            self._batch_started = self._clock()
        pending = self._pending
        prev = pending.get((project_id, key))
        if prev is not None and lease is None:  # what the row in the database would keep
            lease, agent = prev[ROW_LEASE], prev[ROW_AGENT]
        if prev is not None and attempts is None:
            attempts = prev[ROW_ATTEMPTS]
        pending[project_id, key] = (
            project_id, key, state, lease, agent, result, cache_key, error, log, attempts, self._time(),
            int(reused), duration,
        )
        if state == "running" and self._writer is not None:
            self._young.append((project_id, key))
        self._unflushed += 1
        if self._unflushed >= self.max_batch:
            self._filled()

    def _jobs_started(self, project_id: str, keys: list[str], leases: list[str], agent: str) -> None:
        """`_job` for each job (key and lease at the same place) leased to `agent`, in order, in one
        call: the same running rows, and the same commits when the batch fills on the way."""
        if self._db is None:
            raise JournalError(f"journal {self.path}: used after close()")
        pending, max_batch, now = self._pending, self.max_batch, self._time()
        young = self._young if self._writer is not None else None
        for key, lease in zip(keys, leases, strict=True):
            if self._unflushed == 0:
                self._batch_started = self._clock()
            job = (project_id, key)
            prev = pending.get(job)
            pending[job] = (project_id, key, "running", lease, agent, None, None, None, None,
                            None if prev is None else prev[ROW_ATTEMPTS], now, 0, None)
            if young is not None:
                young.append(job)
            self._unflushed += 1
            if self._unflushed >= max_batch:
                self._filled()
                pending, young = self._pending, self._young if young is not None else None  # handed over

    def _jobs_done(self, project_id: str, keys: list[str], blobs: list[bytes | None]) -> None:
        """`_job` for each job done (rendered, no cache key; key and packed result at the same place),
        in order, in one call: the same rows, and the same commits when the batch fills on the way.
        Without results, the writer thread may write them as groups (the module docstring)."""
        if self._db is None:
            raise JournalError(f"journal {self.path}: used after close()")
        pending, max_batch, now = self._pending, self.max_batch, self._time()
        grouped = self._writer is not None and blobs.count(None) == len(blobs)
        start = 0
        for at, (key, blob) in enumerate(zip(keys, blobs, strict=True)):
            if self._unflushed == 0:
                self._batch_started = self._clock()
            job = (project_id, key)
            prev = pending.get(job)
            if prev is None:
                pending[job] = (project_id, key, "done", None, None, blob, None, None, None, None, now, 0,
                                None)
            else:  # what the row in the database would keep
                pending[job] = (project_id, key, "done", prev[ROW_LEASE], prev[ROW_AGENT], blob, None, None,
                                None, prev[ROW_ATTEMPTS], now, 0, None)
            self._unflushed += 1
            if self._unflushed >= max_batch and (self._writing is None or self._unflushed >= 4 * max_batch):
                if grouped:  # `_filled` hands the batch over: this call's jobs so far go with it
                    self._done.append((project_id, now, keys[start:at + 1]))
                    start = at + 1
                self._filled()
                pending = self._pending  # a commit handed the batch over
        if grouped and start < len(keys):
            self._done.append((project_id, now, keys[start:]))  # a copy: the writer thread reads it

    def _filled(self) -> None:
        """The batch holds `max_batch` writes: commit it (or hand it to the writer thread)."""
        if self._writer is None:
            self.flush()
        elif self._writing is None:  # else the loop's next `tick` hands it over (no lock taken per write)
            self._commit_in_background()
        elif self._unflushed >= 4 * self.max_batch:  # the writer fell behind: wait for its commit, then
            self._commit_in_background()  # hand it this one (SQLite's work stays off the loop)

    def _commit_in_background(self) -> None:
        """Hand the batch to the writer thread (the previous one done); the loop goes on."""
        assert self._writer is not None
        self._wait_writer()  # raises if the previous commit failed
        if self._conn.in_transaction:  # a project write is open: commit all together, here
            self.flush()
            return
        batch, young, self._young = self._pending, self._young, []
        done, self._done = self._done, []
        held = {}  # running rows of this batch wait for the next one (once), in case they end meanwhile
        for job in young:
            row = batch.get(job)
            if row is not None and row[ROW_STATE] == "running":
                held[job] = batch.pop(job)
        if held:
            self._batch_started = self._clock()
        if not batch:  # all of it held: nothing to write yet
            self._pending = held
            return
        self._inflight, self._pending = batch, held
        self._inflight_count, self._unflushed = self._unflushed - len(held), len(held)
        self._writing = self._writer.submit(self._commit_rows, batch, done)

    def _commit_rows(self, batch: dict[tuple[str, str], Row], done: list[Done]) -> set[str]:  # writer thread
        """Commit the batch (`write_groups`); returns the projects given groups."""
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            grouped = write_groups(db, batch, done)
            db.execute("COMMIT")
            return grouped
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise self._error(exc, "record jobs") from None

    def _wait_writer(self) -> None:
        """Wait for the writer thread's commit, if one is running; raise its error, if any."""
        writing, self._writing = self._writing, None
        if writing is not None:
            try:
                self._unfolded.update(writing.result())
            finally:
                self._inflight, self._inflight_count = {}, 0

    def _spill(self) -> None:
        """Write the in-memory batch into the open transaction (without committing it)."""
        self._wait_writer()
        self._young.clear()  # all of it goes into the transaction now
        self._done.clear()  # as rows: a read follows
        if not self._pending:
            return
        db = self._conn
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            write_rows(db, list(self._pending.values()))
        except sqlite3.Error as exc:
            raise self._error(exc, "record jobs") from None
        self._pending.clear()

    def discard(self) -> int:
        """After a write failed for the disk (full, read-only): drop what is not committed (the
        batch, the writer's commit, an open transaction), so the next write starts clean; returns
        how many job writes were dropped (those jobs count as not done after a restart)."""
        dropped = self.unflushed
        writing, self._writing = self._writing, None
        if writing is not None:
            try:
                writing.result()
            except JournalError:
                pass
        self._inflight, self._inflight_count = {}, 0
        self._pending.clear()
        self._young.clear()
        self._done.clear()
        self._unflushed = 0
        if self._db is not None and self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:  # SQLite may have rolled it back itself
                log.debug("journal %s: rollback: %s", self.path, exc)
            self._unfolded.clear()  # a fold rolled back: its groups are there again
            self._find_unfolded()
        return dropped

    def _find_unfolded(self) -> None:
        """The projects with groups in the file, and the newest group's time (at opening, after a
        rollback)."""
        try:
            found = self._conn.execute("SELECT DISTINCT project_id FROM done_groups")
            self._unfolded.update(project_id for (project_id,) in found)
            newest = self._conn.execute("SELECT max(updated_at) FROM done_groups").fetchone()[0]
            self._last_time = max(self._last_time, newest or 0.0)
        except sqlite3.Error as exc:
            log.warning("journal %s: cannot list its grouped jobs (%s); reads fold every project", self.path,
                        exc)
            self._unfolded.add("")  # see `_fold`: every project then

    def _fold(self, project_id: str) -> None:
        """Before a read of the project's jobs on this connection: its groups into its job rows (in the
        open transaction), once per commit that gave it groups. Waits for the writer thread."""
        self._wait_writer()
        if project_id not in self._unfolded and "" not in self._unfolded:
            return
        db = self._conn
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            for sql in FOLD:
                db.execute(sql, (project_id,))
        except sqlite3.Error as exc:
            raise self._error(exc, "read grouped jobs") from None
        self._unfolded.discard(project_id)

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
        if self._unflushed >= self.max_batch:  # full: due now (the writer was busy when it filled)
            return 0.0
        now = self._clock() if now is None else now
        return max(0.0, self._batch_started + self.commit_interval - now)

    def tick(self, now: float | None = None) -> bool:
        """Commit the open batch if it is older than `commit_interval` or full; True if it committed.

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
