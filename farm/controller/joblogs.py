"""Every job's recent attempts, with their log tails, kept on the controller for people to read.

One `JobLogs` per run, on the loop thread. Bounded twice: a job keeps its last
`PER_JOB` attempts, each log cut to its last `LOG_BYTES` bytes; a run keeps at most
`PER_RUN_BYTES` in all (log and error text, plus `OVERHEAD` per attempt for the
bookkeeping), the oldest attempts of any job going first, counted in `evicted`. A run of a
million fast jobs therefore holds the newest ~150,000 attempts, not all of them.

With the controller's store (`farm.controller.joblogstore`, opened beside its journal by
`open_store`), every attempt kept is also written to disk and every one let go deleted there,
off the loop: a restarted controller reads a resumed run's attempts back (`kept`), and answers
for runs that finished before it started (`finished_attempts`).
"""

from __future__ import annotations

import collections
import weakref
from typing import TYPE_CHECKING, Any

from farm.controller.joblogstore import JobLogStore, open_beside

if TYPE_CHECKING:
    from farm.journal import Journal

PER_JOB = 3  # attempts kept per job
LOG_BYTES = 64 * 1024  # of each attempt's log tail
PER_RUN_BYTES = 32 * 1024 * 1024  # all the run's attempts together
OVERHEAD = 200  # bytes an attempt costs beyond its text (dict, deque slot, key)


class JobLogs:
    """Recent attempts per job key; `record` on each outcome, `attempts(key)` to read them."""

    def __init__(self, *, per_job: int = PER_JOB, log_bytes: int = LOG_BYTES,
                 per_run_bytes: int = PER_RUN_BYTES, store: JobLogStore | None = None, run: str = "") -> None:
        self.per_job = per_job
        self.log_bytes = log_bytes
        self.per_run_bytes = per_run_bytes
        self.bytes = 0
        self.evicted = 0  # attempts dropped to keep the run within per_run_bytes
        self.live = 0  # attempts kept
        # key -> ([attempts numbered so far], the attempts kept)
        # (a list, not a deque: a deque costs a microsecond and 600 bytes per job, for at most `per_job`)
        self._jobs: dict[str, tuple[list[int], list[dict[str, Any]]]] = {}
        self._order: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()  # oldest first
        self._store, self._run = store, run  # where the kept attempts are mirrored on disk, if anywhere
        if store is not None:
            for key, entry in store.load(run):  # a resumed run: what its last controller kept
                self._keep(key, entry, persist=False)
                held = self._jobs[key][0]
                held[0] = max(held[0], entry["attempt"])
            store.begin(run)

    @classmethod
    def kept(cls, journal: Journal, run: str) -> JobLogs:
        """A run's logs, on disk too if the controller opened a store beside ``journal``."""
        return cls(store=_STORES.get(journal), run=run)

    def record(self, key: str, *, agent: str | None, state: str, error: str | None, duration_s: float | None,
               log: str | None) -> dict[str, Any]:
        """Keep one attempt's outcome (state: done, failed, requeued, lost); returns the record."""
        if log and len(log) > self.log_bytes:
            log = log[-self.log_bytes:]  # the tail says what went wrong last
        if error and len(error) > self.log_bytes:
            error = error[:self.log_bytes]
        held = self._jobs.get(key)
        if held is None:
            held = self._jobs[key] = ([0], [])
        counter = held[0]
        counter[0] += 1
        entry = {"attempt": counter[0], "agent": agent, "state": state, "error": error,
                 "duration_s": None if duration_s is None else round(duration_s, 3), "log": log or ""}
        self._keep(key, entry, persist=True, held=held)
        return entry

    def _keep(self, key: str, entry: dict[str, Any], *, persist: bool,
              held: tuple[list[int], list[dict[str, Any]]] | None = None) -> None:
        attempts = (held or self._jobs.get(key) or self._jobs.setdefault(key, ([0], [])))[1]
        if len(attempts) >= self.per_job:
            self._forget(key, attempts.pop(0))
        attempts.append(entry)
        if persist and self._store is not None:
            self._store.put(self._run, key, entry)
        self._order.append((key, entry))
        self.live += 1
        self.bytes += OVERHEAD + len(entry["log"]) + len(entry["error"] or "")  # `_cost`, inline: every job
        while self.bytes > self.per_run_bytes and self._order[0][1] is not entry:
            old_key, old = self._order.popleft()
            held = self._jobs.get(old_key)
            if held is not None and held[1] and held[1][0] is old:  # else: gone already (per_job)
                held[1].pop(0)
                self._forget(old_key, old)
                self.evicted += 1
                if not held[1]:
                    del self._jobs[old_key]
        if len(self._order) > 2 * self.live + 1024:  # attempts gone per job still queue here: compact
            self._order = collections.deque(item for item in self._order if "gone" not in item[1])

    def attempts(self, key: str) -> list[dict[str, Any]]:
        """The job's kept attempts, oldest first (copies)."""
        held = self._jobs.get(key)
        return [dict(a) for a in held[1]] if held else []

    def last(self, key: str) -> dict[str, Any] | None:
        """The job's newest kept attempt, if any (not a copy: read only)."""
        held = self._jobs.get(key)
        return held[1][-1] if held and held[1] else None

    def _forget(self, key: str, entry: dict[str, Any]) -> None:
        if self._store is not None:
            self._store.drop(self._run, key, entry["attempt"])
        self.bytes -= _cost(entry)
        self.live -= 1
        entry["gone"] = True  # its place in _order is skipped, or compacted away
        entry["log"] = entry["error"] = ""  # the text goes now, not when its place comes up


_STORES: weakref.WeakKeyDictionary[Journal, JobLogStore] = weakref.WeakKeyDictionary()


def open_store(journal: Journal) -> None:
    """Keep the logs of runs on ``journal`` on disk too, in a file beside it (the controller's
    state folder), until `close_store`; a file that cannot be used leaves them in memory only."""
    store = open_beside(journal.path)
    if store is not None:
        _STORES[journal] = store


def close_store(journal: Journal) -> None:
    """Commit the logs written so far and close their file (if `open_store` opened one)."""
    store = _STORES.pop(journal, None)
    if store is not None:
        store.close()


def finished_attempts(journal: Journal, run: str, key: str) -> list[dict[str, Any]]:
    """A job's kept attempts in a run no longer in memory (finished before this start), from disk."""
    store = _STORES.get(journal)
    return store.attempts(run, key) if store is not None else []


def _cost(entry: dict[str, Any]) -> int:
    return OVERHEAD + len(entry["log"]) + len(entry["error"] or "")
