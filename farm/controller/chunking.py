"""Adaptive chunks: how many units (frames, metatiles) each job of a run groups.

A job pays a start-up (a renderer's launch, a scene's load, the hand-over) once, then a time
per unit. Too small a chunk and start-ups dominate; too large and the last agents idle while
one finishes. As results come in, `UnitTimes` fits ``seconds = startup + units * per_unit``
over the recent jobs (an agent's first job on each slot pays one-time costs, such as launching
Blender and loading the scene, that later jobs do not: those count only until other jobs are
in), and `chunk_size` aims each job at ``[jobs] target`` seconds (Flamenco's
rule: target / per-unit time), never so small that start-up is over a quarter of it, and
splits what is left evenly over the run's slots near the end, so agents finish together.

Sizes come from `ChunkAdvisor.LADDER` (1, 2, 3, 4, 6, 8, 12, ...), the type's default chunk,
"all that is left", or the type's ``limit`` (a boundary its jobs do not cross: maptiles groups
metatiles of one row, up to 1,024 tiles): so a re-run (a resume after a restart, a re-submit,
a wider frame or zoom range) finds the jobs done before with a few lookups per job
(`AdaptiveChunks.candidates`) whatever sizes the timing chose then. Frames and map tiles share
this one advisor. Tested without sockets in tests/test_chunks_policy.py.
"""

from __future__ import annotations

import bisect
import collections
import math
import statistics
from collections.abc import Callable

from farm.mediatype import ChunkAdvisor, Job

#: ``[jobs] target`` when the project does not say: a job of about a minute
DEFAULT_TARGET_S = 60.0
#: a job's start-up may be at most this share of it (the floor on a chunk's size)
MAX_STARTUP_SHARE = 0.25
#: the results the fit looks at (the most recent): times drift as a scene gets heavier
SAMPLES = 12
#: a fit that misses a job's time by more than this share is not believed (times changed)
FIT_TOLERANCE = 0.2
#: without a fit, the time per unit is the median of this many most recent jobs'
RECENT = 4
#: a fit needs jobs this many times larger than others: close sizes leave start-up to noise
FIT_SPREAD = 2
#: the largest chunk the adaptive advisor picks
MAX_CHUNK = 4096


class UnitTimes:
    """Recent (units, seconds) of finished jobs, and the fit ``seconds = startup + units * per_unit``."""

    def __init__(self, samples: int = SAMPLES) -> None:
        self.samples: collections.deque[tuple[int, float]] = collections.deque(maxlen=samples)

    def record(self, units: int, seconds: float) -> None:
        """One finished job: ``units`` >= 1, ``seconds`` its run time (finite, >= 0)."""
        if units >= 1 and 0.0 <= seconds < math.inf:
            self.samples.append((units, seconds))

    def estimate(self) -> tuple[float, float] | None:
        """``(per_unit_s, startup_s)``, or None before the first result.

        With jobs of about one size only (under 2x apart: start-up would be noise), or times no
        line fits (units that got slower midway), or a start-up over half the shortest job,
        start-up is taken as 0 and folded into the per-unit time of the latest jobs: jobs still
        come out at the target length, and the tail is split finer rather than coarser.
        """
        if not self.samples:
            return None
        units = [u for u, _ in self.samples]
        secs = [s for _, s in self.samples]
        if max(units) >= FIT_SPREAD * min(units):
            slope, intercept = statistics.linear_regression(units, secs)
            if slope > 0 and 0 <= intercept <= min(secs) / 2 and all(
                    abs(intercept + slope * u - s) <= FIT_TOLERANCE * s for u, s in self.samples):
                return slope, intercept
        recent = list(self.samples)[-RECENT:]
        per_unit = statistics.median(s / u for u, s in recent)
        return max(per_unit, 1e-6), 0.0


def ladder_down(value: float, ladder: tuple[int, ...] = ChunkAdvisor.LADDER) -> int:
    """The largest ladder size <= value (at least 1)."""
    i = bisect.bisect_right(ladder, value)
    return ladder[i - 1] if i else 1


def ladder_up(value: float, ladder: tuple[int, ...] = ChunkAdvisor.LADDER) -> int:
    """The smallest ladder size >= value (at most the ladder's top)."""
    i = bisect.bisect_left(ladder, value)
    return ladder[min(i, len(ladder) - 1)]


def chunk_size(remaining: int, default: int, *, slots: int, target_s: float,
               per_unit_s: float | None, startup_s: float = 0.0) -> int:
    """Units for the next job (1 .. remaining).

    :param remaining: units not yet split into jobs.
    :param default: the media type's chunk, used until a time per unit is known.
    :param slots: slots of the agents that can run the run (0: unknown, no tail split).
    :param target_s: the job length aimed at, seconds.
    :param per_unit_s, startup_s: from `UnitTimes.estimate` (None: nothing measured yet).
    """
    if remaining <= 0:
        return 0
    floor = 1
    if per_unit_s is None:
        size = max(1, default)
    else:
        floor_units = startup_s * (1 - MAX_STARTUP_SHARE) / MAX_STARTUP_SHARE / per_unit_s
        floor = min(ladder_up(floor_units), MAX_CHUNK)
        size = max(min(ladder_down((target_s - startup_s) / per_unit_s), MAX_CHUNK), floor)
    if slots > 0 and remaining < slots * size:
        # The tail (guided scheduling): what is left over the slots, so chunks shrink as the
        # end nears and the agents finish together; never below the start-up floor.
        size = min(size, ladder_up(max(math.ceil(remaining / slots), floor)))
    return min(size, remaining)


class AdaptiveChunks(ChunkAdvisor):
    """The controller's advisor for one run: sizes from measured times (see the module docstring).

    :param target_s: ``[jobs] target``.
    :param known: whether a job is done already (this run's journal, the job cache); None: a run
        that cannot reuse anything (no lookups are made).
    """

    def __init__(self, target_s: float = DEFAULT_TARGET_S,
                 known: Callable[[Job], bool] | None = None) -> None:
        self.target_s = target_s
        self.times = UnitTimes()
        self.warmup = UnitTimes()  # each slot's first job: one-time costs in it
        self._results: collections.Counter[str] = collections.Counter()  # agent id -> results heard
        self._known = known
        self._slots: dict[str, int] = {}  # agent id -> slots, of agents that took this run's jobs
        self.eligible = 0  # agents able to run the run, at the last dispatch
        self.left: int | None = None  # units not yet split, after the last job
        self.last = 0  # the last chunk's size
        self.last_default = 1  # the type's chunk, as the last `next_job` gave it
        self._fixed: int | None = None  # the project's chunk, if it wrote one
        self._rest: Callable[[int, int], int] | None = None  # the last job's `rest`
        # the largest job found done before (a resumed run): the size the timing chose then,
        # so the job count is estimated at it until times come in, not at the type's default
        self.before = 0
        self._hit: str | None = None  # the key `known` last said yes to

    # -- what the run tells it ------------------------------------------------------------

    def saw(self, agent: str, slots: int, eligible: int) -> None:
        """An agent with ``slots`` is taking jobs; ``eligible`` agents can run the run now."""
        self._slots[agent] = max(1, slots)
        self.eligible = eligible

    def record(self, agent: str, units: int, seconds: float) -> None:
        """A job of ``units`` finished on ``agent`` in ``seconds`` (its `JobResult.duration`)."""
        self._results[agent] += 1
        first = self._results[agent] <= self._slots.get(agent, 1)
        (self.warmup if first else self.times).record(units, seconds)

    def estimate(self) -> tuple[float, float] | None:
        """``(per_unit_s, startup_s)`` from the jobs after each slot's first, else from those."""
        return self.times.estimate() or self.warmup.estimate()

    @property
    def slots(self) -> int:
        """The run's slots: eligible agents times the mean slots of those seen."""
        if not self._slots or self.eligible <= 0:
            return 0
        return max(1, round(self.eligible * sum(self._slots.values()) / len(self._slots)))

    # -- what the split asks ---------------------------------------------------------------

    def size(self, remaining: int, default: int) -> int:
        warm = self.times.estimate()
        per_unit, startup = warm or (None, 0.0)
        size = chunk_size(remaining, default, slots=self.slots, target_s=self.target_s,
                          per_unit_s=per_unit, startup_s=startup)
        cold = self.warmup.estimate() if warm is None else None
        if cold is not None:
            # First jobs only: their one-time costs make frames look slower than they are, so
            # they may make chunks larger than the default, never smaller.
            size = max(size, chunk_size(remaining, default, slots=self.slots, target_s=self.target_s,
                                        per_unit_s=cold[0], startup_s=cold[1]))
        return size

    def known(self, job: Job) -> bool:
        hit = self._known is not None and self._known(job)
        if hit:
            self._hit = job.key
        return hit

    def candidates(self, remaining: int, default: int) -> list[int]:
        if self._known is None:
            return []
        sizes = {n for n in self.LADDER if n <= min(remaining, MAX_CHUNK)}
        sizes.update(n for n in (default, remaining) if 1 <= n <= remaining)
        return sorted(sizes, reverse=True)

    def next_job(self, remaining: int, default: int, make: Callable[[int], Job],
                 limit: int | None = None, fixed: bool = False,
                 rest: Callable[[int, int], int] | None = None) -> Job:
        job = super().next_job(remaining, default, make, limit, fixed, rest)
        if self._hit == job.key:
            self.before = max(self.before, job.units)
        self.last = job.units
        self.left = remaining - job.units
        self.last_default = default
        self._fixed = max(1, default) if fixed else None
        self._rest = rest
        return job

    @property
    def fixed(self) -> bool:
        """The project wrote its chunk (known from the first job on): the job count is exact."""
        return self._fixed is not None

    def jobs_left(self) -> int:
        """How many jobs are still to be split off: exact for a fixed chunk (unless jobs done
        before at other sizes are found), else at the size the next job would get now (it
        changes as times come in and the tail shrinks); before any time, at the size of the
        jobs found done before a restart if larger."""
        if not self.left:
            return 0
        size = self._fixed or self.size(self.left, self.last_default)
        if not self._fixed and self.before and self.estimate() is None:
            size = max(size, min(self.before, self.left))
        if self._rest is not None:
            return max(0, int(self._rest(self.last, size)))
        return math.ceil(self.left / max(1, size))
