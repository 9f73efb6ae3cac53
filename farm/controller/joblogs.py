"""Every job's recent attempts, with their log tails, kept on the controller for people to read.

One `JobLogs` per run, on the loop thread. Bounded twice: a job keeps its last
`PER_JOB` attempts, each log cut to its last `LOG_BYTES` bytes; a run keeps at most
`PER_RUN_BYTES` in all (log and error text, plus `OVERHEAD` per attempt for the
bookkeeping), the oldest attempts of any job going first, counted in `evicted`. A run of a
million fast jobs therefore holds the newest ~150,000 attempts, not all of them.
"""

from __future__ import annotations

import collections
from typing import Any

PER_JOB = 3  # attempts kept per job
LOG_BYTES = 64 * 1024  # of each attempt's log tail
PER_RUN_BYTES = 32 * 1024 * 1024  # all the run's attempts together
OVERHEAD = 200  # bytes an attempt costs beyond its text (dict, deque slot, key)


class JobLogs:
    """Recent attempts per job key; `record` on each outcome, `attempts(key)` to read them."""

    def __init__(self, *, per_job: int = PER_JOB, log_bytes: int = LOG_BYTES,
                 per_run_bytes: int = PER_RUN_BYTES) -> None:
        self.per_job = per_job
        self.log_bytes = log_bytes
        self.per_run_bytes = per_run_bytes
        self.bytes = 0
        self.evicted = 0  # attempts dropped to keep the run within per_run_bytes
        self.live = 0  # attempts kept
        # key -> ([attempts numbered so far], the attempts kept)
        self._jobs: dict[str, tuple[list[int], collections.deque[dict[str, Any]]]] = {}
        self._order: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()  # oldest first

    def record(self, key: str, *, agent: str | None, state: str, error: str | None, duration_s: float | None,
               log: str | None) -> dict[str, Any]:
        """Keep one attempt's outcome (state: done, failed, requeued, lost); returns the record."""
        if log and len(log) > self.log_bytes:
            log = log[-self.log_bytes:]  # the tail says what went wrong last
        if error and len(error) > self.log_bytes:
            error = error[:self.log_bytes]
        counter, attempts = self._jobs.get(key) or self._jobs.setdefault(key, ([0], collections.deque()))
        counter[0] += 1
        entry = {"attempt": counter[0], "agent": agent, "state": state, "error": error,
                 "duration_s": None if duration_s is None else round(duration_s, 3), "log": log or ""}
        if len(attempts) >= self.per_job:
            self._forget(attempts.popleft())
        attempts.append(entry)
        self._order.append((key, entry))
        self.live += 1
        self.bytes += _cost(entry)
        while self.bytes > self.per_run_bytes and self._order[0][1] is not entry:
            old_key, old = self._order.popleft()
            held = self._jobs.get(old_key)
            if held is not None and held[1] and held[1][0] is old:  # else: gone already (per_job)
                held[1].popleft()
                self._forget(old)
                self.evicted += 1
                if not held[1]:
                    del self._jobs[old_key]
        if len(self._order) > 2 * self.live + 1024:  # attempts gone per job still queue here: compact
            self._order = collections.deque(item for item in self._order if "gone" not in item[1])
        return entry

    def attempts(self, key: str) -> list[dict[str, Any]]:
        """The job's kept attempts, oldest first (copies)."""
        held = self._jobs.get(key)
        return [dict(a) for a in held[1]] if held else []

    def last(self, key: str) -> dict[str, Any] | None:
        """The job's newest kept attempt, if any (not a copy: read only)."""
        held = self._jobs.get(key)
        return held[1][-1] if held and held[1] else None

    def _forget(self, entry: dict[str, Any]) -> None:
        self.bytes -= _cost(entry)
        self.live -= 1
        entry["gone"] = True  # its place in _order is skipped, or compacted away
        entry["log"] = entry["error"] = ""  # the text goes now, not when its place comes up


def _cost(entry: dict[str, Any]) -> int:
    return OVERHEAD + len(entry["log"]) + len(entry["error"] or "")
