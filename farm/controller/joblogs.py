"""Every job's recent attempts, with their log tails, kept on the controller for people to read.

One `JobLogs` per run, on the loop thread. Bounded twice: a job keeps its last
`PER_JOB` attempts, each log cut to its last `LOG_BYTES` bytes; a run keeps at most
`PER_RUN_BYTES` in all (log and error text, plus `OVERHEAD` per attempt for the
bookkeeping), the oldest attempts of any job going first, counted in `evicted`. A run of a
million fast jobs therefore holds the newest ~150,000 attempts, not all of them. (An attempt
let go because its job has `PER_JOB` newer ones keeps its text in memory until the queue of
attempts is compacted, at the latest once such text adds up to half of `PER_RUN_BYTES`.)

With the controller's store (`farm.controller.joblogstore`, which the controller opens beside
its journal and gives each run), every attempt kept is also written to disk and every one let go
deleted there, off the loop: a restarted controller reads a resumed run's attempts back, and
answers for runs that finished before it started (`finished_attempts`).
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Iterable
from itertools import repeat
from typing import Any

from farm.controller.joblogstore import FIELDS, JobLogStore

PER_JOB = 3  # attempts kept per job
LOG_BYTES = 64 * 1024  # of each attempt's log tail
PER_RUN_BYTES = 32 * 1024 * 1024  # all the run's attempts together
OVERHEAD = 200  # bytes an attempt costs beyond its text (tuples, deque slot, key)


Attempt = tuple[int, str | None, str, str | None, float | None, str]


class JobLogs:
    """Recent attempts per job key; `record` on each outcome, `attempts(key)` to read them.

    Attempts are kept as tuples of plain values (`FIELDS`), in tuples per job: containers the
    cyclic garbage collector stops tracking, so a run's hundred thousand kept attempts cost no
    full collection anything (dicts in lists did: milliseconds per collection, microseconds per job).
    A job's first attempt is kept as itself, and the queue of attempts keeps keys and attempts side
    by side: no tuple made per job beyond the attempt (each is walked by a young collection once).
    """

    def __init__(self, *, per_job: int = PER_JOB, log_bytes: int = LOG_BYTES,
                 per_run_bytes: int = PER_RUN_BYTES, store: JobLogStore | None = None, run: str = "") -> None:
        self.per_job = per_job
        self.log_bytes = log_bytes
        self.per_run_bytes = per_run_bytes
        self.bytes = 0
        self.evicted = 0  # attempts dropped to keep the run within per_run_bytes
        self.live = 0  # attempts kept
        # key -> its attempt numbered 1 when that is all there is (the common case), else (attempts
        # numbered so far, *the attempts kept): tell them apart with `_kept`
        self._jobs: dict[str, tuple[Any, ...]] = {}
        self._order: collections.deque[Attempt] = collections.deque()  # oldest first
        self._order_keys: collections.deque[str] = collections.deque()  # their keys, in step
        self._gone_text = 0  # text of attempts let go that still wait in _order (compacted away)
        self._store, self._run = store, run  # where the kept attempts are mirrored on disk, if anywhere
        if store is not None:
            for key, entry in store.load(run):  # a resumed run: what its last controller kept
                attempt = tuple(entry[f] for f in FIELDS)
                self._keep(key, attempt, max(self.numbered(key), attempt[0]), persist=False)
            store.begin(run)

    def record(self, key: str, *, agent: str | None, state: str, error: str | None, duration_s: float | None,
               log: str | None) -> dict[str, Any]:
        """Keep one attempt's outcome (state: done, failed, requeued, lost); returns the record."""
        return dict(zip(FIELDS, self.note(key, agent, state, error, duration_s, log), strict=True))

    def note(self, key: str, agent: str | None, state: str, error: str | None, duration_s: float | None,
             log: str | None) -> Attempt:
        """`record`, returning the attempt as a tuple of `FIELDS` (the loop's per-job path)."""
        if log and len(log) > self.log_bytes:
            log = log[-self.log_bytes:]  # the tail says what went wrong last
        if error and len(error) > self.log_bytes:
            error = error[:self.log_bytes]
        numbered = self.numbered(key) + 1
        duration_s = None if duration_s is None else round(duration_s, 3)
        attempt = (numbered, agent, state, error, duration_s, log or "")
        self._keep(key, attempt, numbered, persist=True)
        return attempt

    def notes(self, state: str, entries: Iterable[tuple[str, str | None, float | None, str | None]]) -> None:
        """`note` for each (key, agent, duration s, log) of a message's jobs, in order, all in
        `state` and without an error: a job's first attempt with a log within `log_bytes` kept here
        in one step (the same attempt, bounds and writes as `note`), any other through `note`."""
        jobs, order, keys = self._jobs, self._order, self._order_keys
        log_bytes, per_run_bytes = self.log_bytes, self.per_run_bytes
        store, run = self._store, self._run
        put_keys: list[str] = []  # attempts for the store, in one call (before any other write of it)
        put_attempts: list[Attempt] = []
        for key, agent, duration_s, log in entries:
            if key in jobs or (log and len(log) > log_bytes):
                if put_keys:
                    store.put_many(run, put_keys, put_attempts)  # type: ignore[union-attr]
                    put_keys, put_attempts = [], []
                self.note(key, agent, state, None, duration_s, log)
                order, keys = self._order, self._order_keys  # compacted, perhaps
                continue
            attempt = (1, agent, state, None, None if duration_s is None else round(duration_s, 3), log or "")
            jobs[key] = attempt
            if store is not None:
                put_keys.append(key)
                put_attempts.append(attempt)
            order.append(attempt)
            keys.append(key)
            self.live += 1
            self.bytes += OVERHEAD + len(attempt[5])
            if (self.bytes > per_run_bytes or len(order) > 2 * self.live + 1024
                    or self._gone_text > per_run_bytes // 2):
                if put_keys:  # its writes (drops) come after these
                    store.put_many(run, put_keys, put_attempts)  # type: ignore[union-attr]
                    put_keys, put_attempts = [], []
                self._bound(attempt)
                order, keys = self._order, self._order_keys  # compacted, perhaps
        if put_keys:
            store.put_many(run, put_keys, put_attempts)  # type: ignore[union-attr]

    def notes_from(self, state: str, agent: str, keys: list[str], durations: list[float],
                   logs: list[str | None]) -> None:
        """`notes` of (key, `agent`, duration s, log) at each place of the lists: one agent's message.
        When every job is new here (distinct, no attempt kept), every log within `log_bytes` and the
        run within its bytes after them all, the attempts are made and kept in C loops (the same
        tuples, order, counts and store writes as `note` for each: nothing is bounded or compacted on
        the way); else `notes`."""
        count = len(keys)
        if not count:
            return
        jobs, log_bytes = self._jobs, self.log_bytes
        plain_logs = logs.count(None) == count  # the common case: no log text at all
        if plain_logs:
            texts: Any = repeat("", count)
            text = 0
        else:
            texts = [log or "" for log in logs]
            text = sum(map(len, texts))
        fresh = set(keys)
        attempts = None
        if (len(fresh) == count and jobs.keys().isdisjoint(fresh)
                and (plain_logs or max(map(len, texts)) <= log_bytes)
                and self.bytes + count * OVERHEAD + text <= self.per_run_bytes
                and self._gone_text <= self.per_run_bytes // 2):
            try:
                attempts = list(zip(repeat(1), repeat(agent), repeat(state), repeat(None),
                                    map(round, durations, repeat(3)), texts))
            except TypeError:  # a duration of None: `note` keeps it as None
                pass
        if attempts is None:
            self.notes(state, zip(keys, repeat(agent), durations, logs))
            return
        jobs.update(zip(keys, attempts))
        self._order.extend(attempts)
        self._order_keys.extend(keys)
        self.live += count
        self.bytes += count * OVERHEAD + text
        store = self._store
        if store is not None and text == 0:  # the common case: one row for them all
            store.put_pack(self._run, agent, state, keys, attempts)
        elif store is not None:
            store.put_fresh(self._run, keys, attempts, text)

    def _keep(self, key: str, attempt: Attempt, numbered: int, *, persist: bool) -> None:
        held = self._jobs.get(key)
        if held is None:  # the common case: a job's first attempt
            self._jobs[key] = attempt if numbered == attempt[0] == 1 else (numbered, attempt)
        else:
            kept = _kept(held)
            if len(kept) >= self.per_job:
                self._forget(key, kept[0])
                kept = kept[1:]
            self._jobs[key] = (numbered, *kept, attempt)
        if persist and self._store is not None:
            self._store.put(self._run, key, attempt)
        self._order.append(attempt)
        self._order_keys.append(key)
        self.live += 1
        self.bytes += OVERHEAD + len(attempt[5]) + len(attempt[3] or "")  # log and error text
        self._bound(attempt)

    def _bound(self, attempt: Attempt) -> None:
        """After `attempt` was kept: the oldest attempts go while the run is over its bytes, and the
        queue of attempts is compacted when those let go per job add up."""
        order, keys = self._order, self._order_keys
        while self.bytes > self.per_run_bytes and order[0] is not attempt:
            old, old_key = order.popleft(), keys.popleft()
            held = self._jobs.get(old_key)
            kept = _kept(held) if held is not None else ()
            if not kept or kept[0] is not old:  # let go already (per_job)
                self._gone_text -= len(old[5]) + len(old[3] or "")
                continue
            self._forget(old_key, old, queued=False)
            self.evicted += 1
            if len(kept) > 1:
                self._jobs[old_key] = (held[0], *kept[1:])  # type: ignore[index]
            else:
                del self._jobs[old_key]
        # attempts let go per job still queue in _order, with their text: compact when they add up
        if len(order) > 2 * self.live + 1024 or self._gone_text > self.per_run_bytes // 2:
            live = [(key, a) for key, a in zip(keys, order, strict=True) if _held(self._jobs.get(key), a)]
            self._order = collections.deque(a for _, a in live)
            self._order_keys = collections.deque(key for key, _ in live)
            self._gone_text = 0

    def attempts(self, key: str) -> list[dict[str, Any]]:
        """The job's kept attempts, oldest first (copies)."""
        held = self._jobs.get(key)
        return [] if held is None else [dict(zip(FIELDS, a, strict=True)) for a in _kept(held)]

    def numbered(self, key: str) -> int:
        """The job's attempts numbered so far (its newest one's number): 0 if none is kept."""
        held = self._jobs.get(key)
        return 0 if held is None else held[0]  # an attempt's own number, or the count before the kept

    def last(self, key: str) -> dict[str, Any] | None:
        """The job's newest kept attempt, if any."""
        held = self._jobs.get(key)
        return None if held is None else dict(zip(FIELDS, _kept(held)[-1], strict=True))

    def duration(self, key: str) -> float | None:
        """The run time of the job's newest kept attempt (seconds), if any."""
        last = self.last(key)
        return None if last is None else last["duration_s"]

    def unjournaled(self, done: Collection[str], error: str) -> int:
        """Mark `lost` with `error` each newest kept attempt that says done of a job `done` (the
        journal's done jobs) lacks: a result this log kept that a controller killed before its
        journal's commit never recorded; the job runs again, and its log must not say done twice.
        The attempt keeps its number, agent, time and log. Returns how many were marked."""
        found = [(key, held) for key, held in self._jobs.items()
                 if _kept(held)[-1][2] == "done" and key not in done]
        for key, held in found:
            kept, numbered = _kept(held), self.numbered(key)
            last = kept[-1]
            self._forget(key, last)
            if len(kept) > 1:
                self._jobs[key] = (numbered, *kept[:-1])
            else:
                del self._jobs[key]
            self._keep(key, (last[0], last[1], "lost", error, last[4], last[5]), numbered, persist=True)
        return len(found)

    def _forget(self, key: str, attempt: Attempt, *, queued: bool = True) -> None:
        """Let an attempt go; `queued`: it still waits in _order (its text goes when compacted)."""
        if self._store is not None:
            self._store.drop(self._run, key, attempt[0])
        text = len(attempt[5]) + len(attempt[3] or "")
        self.bytes -= OVERHEAD + text
        self.live -= 1
        if queued:
            self._gone_text += text


def _kept(held: tuple[Any, ...]) -> tuple[Attempt, ...]:
    """A job's kept attempts from its entry in ``JobLogs._jobs``: an attempt kept as itself (its
    second field an agent id or None), or (numbered, *attempts)."""
    return held[1:] if held[1].__class__ is tuple else (held,)  # type: ignore[return-value]


def _held(held: tuple[Any, ...] | None, attempt: Attempt) -> bool:
    """Whether this attempt is one of the job's kept ones (by identity)."""
    return held is not None and any(a is attempt for a in _kept(held))


def finished_attempts(store: JobLogStore | None, run: str, key: str) -> list[dict[str, Any]]:
    """A job's kept attempts in a run no longer in memory (finished before this start), from
    the controller's ``store`` (none: the logs were kept in memory only)."""
    return store.attempts(run, key) if store is not None else []
