"""A run's progress in its media's own units (tiles, frames, seconds of audio), and when a
run's progress is worth announcing.

`UnitCounter` asks the media type how many units each job holds (`MediaType.units`) as the
run pulls it from `split`, and adds them up as jobs finish, fail, are reused or were done
before a restart. `ProgressGate` lets a ``progress`` event through only when a run's
snapshot changed (or as a slow keep-alive), so an idle run does not fill the event buffer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from farm.mediatype import Job, MediaType
    from farm.project import Project

log = logging.getLogger(__name__)

MAX_UNITS = 1e15  # per job or per project: beyond it a plugin's figure is a bug, not a count
KEEPALIVE_S = 5.0  # an unchanged run's progress is announced this often all the same
#: snapshot fields that change with the clock alone: a change there is not news
CLOCK_FIELDS = frozenset({"elapsed_s", "rate", "eta_s"})


class UnitCounter:
    """Units of one run: the total (when known up front), done, failed and part-way.

    The controller's loop thread alone calls it. Units of a job are asked once, when the job
    is pulled, and kept (by job key) until it is done, so a job that fails and is retried or
    rendered again counts once. A plugin whose `units` raises or returns nonsense costs that
    job's units (0, logged once), never the run.
    """

    def __init__(self, media: MediaType, project: Project) -> None:
        self.media = media
        self.project = project
        self._warned = False
        self.name = media.unit if isinstance(media.unit, str) and media.unit else "jobs"
        self.total = self._checked(lambda: media.total_units(project), "total_units()")
        self.done = 0.0
        self.failed = 0.0
        self.resumed = 0.0  # done before a controller restart: not part of this run's rate
        self.pending: dict[str, float] = {}  # job key -> units, from its pull until it is done
        self.failed_keys: set[str] = set()
        self._counted_at_resume: set[str] = set()  # done keys `resume` counted: not again when pulled

    def seen(self, job: Job) -> None:
        """A job came out of `split`: remember what it holds."""
        if job.key in self.pending:
            return
        try:  # the common case checked inline (this runs for every job): a plain number in range
            units = self.media.units(job, self.project)
        except Exception as exc:
            units = exc
        if (units.__class__ is int or units.__class__ is float) and 0 <= units <= MAX_UNITS:
            self.pending[job.key] = float(units)
            return
        self._seen_odd(job.key, units)

    def seen_all(self, jobs: Iterable[Job]) -> None:
        """`seen` of each of `jobs`, in order, in one call (a dispatch turn's, `farm.controller.leasing`)."""
        pending, units_of, project = self.pending, self.media.units, self.project
        for job in jobs:
            key = job.key
            if key in pending:
                continue
            try:
                units = units_of(job, project)
            except Exception as exc:
                units = exc
            if (units.__class__ is int or units.__class__ is float) and 0 <= units <= MAX_UNITS:
                pending[key] = float(units)
            else:
                self._seen_odd(key, units)

    def _seen_odd(self, key: str, units: Any) -> None:
        """What `units` gave for job `key` was not a plain number in range (or it raised)."""

        def asked() -> Any:  # through the full check, which says what is wrong (once)
            if isinstance(units, Exception):
                raise units
            return units

        self.pending[key] = self._checked(asked, f"units() of {key!r}") or 0.0

    def resume(self, done_keys: Collection[str], failed_keys: Collection[str],
               jobs: Iterable[Job] | None = None) -> bool:
        """A run resumed after a restart: count the units of its jobs done (or failed for good)
        before it now, so a run that pulls nothing (paused, or stalled) shows them at once.

        Walks `jobs` (a fresh `split`, made as the run makes its own: with a chunk advisor that
        finds the jobs done at whatever sizes they had) until every such key is seen (the run's
        own pulls come later and do not count these again). A `split` that raises leaves them to
        be counted when pulled. True when the split ended with every job in it done or failed:
        nothing is left to run.
        """
        if not done_keys and not failed_keys:
            return False
        left = len(done_keys) + len(failed_keys)
        done: dict[str, float] = {}
        failed_units: dict[str, float] = {}
        only_known = True  # every job walked was done or failed before
        try:
            walk = iter(self.media.split(self.project) if jobs is None else jobs)
            for job in walk:
                key = getattr(job, "key", None)
                if key not in done_keys and key not in failed_keys:
                    only_known = False
                    continue
                units = self._checked(lambda job=job: self.media.units(job, self.project),
                                      f"units() of {key!r}") or 0.0
                if key in done_keys:
                    done.setdefault(key, units)
                elif key not in failed_units:
                    failed_units[key] = units
                left -= 1
                if left <= 0:
                    only_known = only_known and next(walk, None) is None
                    break
        except Exception as exc:  # the run's own pulls meet (and report) it again
            log.info("%s: counting the units done before the restart: split() raised %r",
                     self.project.name, exc)
            return False
        self.done += sum(done.values())
        self.resumed += sum(done.values())
        self.failed += sum(failed_units.values())
        self.failed_keys |= set(failed_units)
        self.pending.update(failed_units)  # kept, so a retry by hand that succeeds moves them to done
        self._counted_at_resume = set(done)
        return only_known

    def resumed_done(self, key: str) -> None:
        """A job pulled again after a restart was done before it."""
        units = self.pending.pop(key, 0.0)
        if key in self._counted_at_resume:  # `resume` counted it already
            self._counted_at_resume.discard(key)
            return
        self.done += units
        self.resumed += units

    def job_done(self, key: str) -> None:
        units = self.pending.pop(key, 0.0)
        if key in self.failed_keys:  # failed for good, then retried by hand and done after all
            self.failed_keys.discard(key)
            self.failed -= units
        self.done += units

    def jobs_done(self, keys: list[str]) -> None:
        """`job_done` of each, in order (the same sums)."""
        pending, failed_keys, done = self.pending, self.failed_keys, self.done
        for key in keys:
            units = pending.pop(key, 0.0)
            if failed_keys and key in failed_keys:
                failed_keys.discard(key)
                self.failed -= units
            done += units
        self.done = done

    def job_failed(self, key: str) -> None:
        if key not in self.failed_keys:
            self.failed_keys.add(key)
            self.failed += self.pending.get(key, 0.0)

    def of(self, key: str) -> float:
        """The units of a job pulled and not done yet (0 for one never seen)."""
        return self.pending.get(key, 0.0)

    def snapshot(self, partial: Mapping[str, float], elapsed: float, *, exhausted: bool,
                 active: bool, moving: bool = True, over: bool = False) -> dict[str, Any]:
        """``{"name", "done", "failed", "partial", "total", "rate", "eta_s"}`` for the run's snapshot.

        `partial` maps running job keys to their reported fraction (0..1), and rendered ones being
        collated to 1; `elapsed`: the seconds the run could move (`RunReport.moving`). ``total`` is
        None while unknown (known once `split` is exhausted, if the media type cannot say it up
        front); ``rate`` is units per second over `elapsed` (None in its first half second, with
        none done, or while not `moving`: nothing can run; `over`: its work is over, so even a run of
        under half a second has its final pace); ``eta_s``
        is seconds left at that rate (None when unknown, or when not `active`: finished or paused).
        """
        part = sum(self.pending.get(key, 0.0) * fraction for key, fraction in partial.items())
        total = self.total
        if total is None and exhausted:
            waiting = sum(u for k, u in self.pending.items() if k not in self.failed_keys)
            total = self.done + self.failed + waiting
        moved = self.done - self.resumed + part  # failed units are no pace
        rate = moved / elapsed if moved > 0 and moving and (elapsed > 0.5 or (over and elapsed > 0)) else None
        left = None if total is None else max(0.0, total - self.done - self.failed - part)
        return {
            "name": self.name,
            "done": _round(self.done),
            "failed": _round(self.failed),
            "partial": _round(part),
            "total": None if total is None else _round(total),
            "rate": _round(rate) if rate else None,
            "eta_s": (None if left is None or not active else 0.0 if left <= 0  # nothing left: 0 at once
                      else round(left / rate, 1) if rate else None),
        }

    def _checked(self, ask: Any, what: str) -> float | None:
        try:
            value = ask()
        except Exception as exc:
            self._warn(f"{what} raised {exc!r}")
            return None
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_UNITS \
                or math.isnan(value):
            self._warn(f"{what} returned {value!r}, not a number of {self.name} from 0 to {MAX_UNITS:g}")
            return None
        return float(value)

    def _warn(self, message: str) -> None:
        if not self._warned:  # once per run: a plugin bug must not flood the log
            self._warned = True
            log.warning("%s: media type %r: %s; progress in %s is approximate",
                        self.project.name, self.media.name, message, self.name)


def _round(value: float) -> float | int:
    """Whole counts stay integers on the wire (tiles, frames); fractions keep 3 decimals."""
    return int(value) if float(value).is_integer() else round(value, 3)


class ProgressGate:
    """Which runs' snapshots to announce as ``progress`` events: changed ones, and each run at
    least every `keepalive` seconds. Loop thread only."""

    def __init__(self, keepalive: float = KEEPALIVE_S) -> None:
        self.keepalive = keepalive
        self._last: dict[str, tuple[dict[str, Any], float]] = {}  # run id -> (what changes, when sent)

    def changed(self, run_id: str, snapshot: Mapping[str, Any], now: float) -> bool:
        """True if this snapshot should be published (it then counts as the last one sent)."""
        news = {k: v for k, v in snapshot.items() if k not in CLOCK_FIELDS}
        units = news.get("units")
        if isinstance(units, Mapping):
            news["units"] = {k: v for k, v in units.items() if k not in CLOCK_FIELDS}
        last = self._last.get(run_id)
        if last is not None and last[0] == news and now - last[1] < self.keepalive:
            return False
        self._last[run_id] = (news, now)
        return True

    def forget(self, run_id: str) -> None:
        """A run ended: nothing more to compare its snapshots with."""
        self._last.pop(run_id, None)
