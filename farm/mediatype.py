"""What a media type is: the one class a plugin author writes.

A media type splits a project into jobs (on the controller), renders one job (on an
agent, in a child worker process, in a scratch folder), collates each job's outputs
as they come back (on the controller, in any order), and finalizes once all are in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from farm.preview import PreviewContext
    from farm.project import Project
    from farm.settings import SettingsReader


class _NewDict:
    """`Job`'s default for ``params``: a new empty dict each time (shown as dataclasses show a factory)."""

    def __repr__(self) -> str:
        return "<factory>"


_NEW_DICT: Any = _NewDict()


@dataclass(frozen=True, init=False)
class Job:
    """One unit of work.

    :param key: stable across runs of the same project (same project, same keys), so
        a resumed or re-submitted project can skip work already done. Unique per project.
    :param params: what `render` needs; msgpack-able (str, int, float, bool, None, list, dict).
    :param inputs: the project assets this job reads (relative paths); None means all.
    :param deps: keys of jobs yielded earlier that must finish first; their results
        reach `render` as `ctx.deps`.
    :param units: how many of the media type's units (frames, metatiles) the job groups; the
        controller learns the time per unit from it (`ChunkAdvisor`). Stays on the controller.
    """

    key: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] | None = None
    deps: tuple[str, ...] = ()
    units: int = 1

    def __init__(self, key: str, params: dict[str, Any] = _NEW_DICT, inputs: tuple[str, ...] | None = None,
                 deps: tuple[str, ...] = (), units: int = 1) -> None:
        # the frozen dataclass's own __init__ sets each field through `object.__setattr__` (~0.55 us,
        # on the controller's dispatch path of every job); the instance's dict takes the same fields
        # in one update at ~0.3 (`tests/test_dispatch_lean.py` holds it to the dataclass's)
        self.__dict__.update(key=key, params={} if params is _NEW_DICT else params, inputs=inputs, deps=deps,
                             units=units)


@dataclass
class RenderContext:
    """What `render` gets on the agent, besides the job."""

    project_dir: Path  # the project's assets (read-only)
    output_dir: Path  # write outputs here; every file here goes back to the controller
    work_dir: Path  # scratch, also the current directory; emptied after the job
    settings: Mapping[str, Any]  # the media type's normalised settings
    threads: int  # this slot's share of the node's cores
    cache: dict[str, Any]  # lives as long as the worker process, per project
    deps: Mapping[str, Any]  # results of the jobs this one depends on
    progress: Callable[[float], None] = lambda fraction: None
    log: logging.Logger = logging.getLogger("farm.job")
    #: the job this worker renders next, with this same context (project, settings, threads, cache),
    #: once it has reached the worker; else None. Cheap: it may be asked often. `render` is still
    #: called for that job next, unless the worker dies first (a cancel, a timeout: its children go too)
    upcoming: Callable[[], Job | None] = lambda: None


@dataclass
class CollateContext:
    """What `collate` and `finalize` get on the controller, for one project run.

    :param project: the project as the controller loaded it (``.root``, ``.settings``, ``.name``).
    :param output_dir: the run's output folder; it exists before any `collate` and before `finalize`.
    :param state: the media type's own per-run state (open files, writers). It lives in this
        controller process only: after a controller restart it starts empty and the jobs done
        before are not collated again, so what must survive is derived from the outputs or
        from ``done`` (see docs/plugins.md, "Per-run state"). `MediaType.release` closes what it
        holds at every run end; it is emptied once a run that finished done is journaled.
    :param log: the logger for this media type's collates; on a controller its warnings are also
        the run's ``notes`` in its summary (what a remote `farm submit` prints).
    :param done: keys of the run's jobs whose outputs were collated, by this process or by
        one before a restart, rendered or reused; the job being collated is not in it yet.
    :param failed: keys of the run's jobs that failed for good (their outputs never came).
    :param reused: the keys in ``done`` whose outputs came from the job cache, not a render.

    The three are read-only sets of str (``key in ctx.done``, ``len``, iteration), complete in
    `finalize` also after a resume; read them there rather than counting in ``state``.
    """

    project: Project
    output_dir: Path
    state: dict[str, Any]
    log: logging.Logger | logging.LoggerAdapter = logging.getLogger("farm.collate")  # type: ignore[type-arg]
    done: AbstractSet[str] = frozenset()
    failed: AbstractSet[str] = frozenset()
    reused: AbstractSet[str] = frozenset()


class ChunkAdvisor:
    """How many units (frames, metatiles) the next job of a run groups: a fixed chunk.

    A media type whose units can be grouped sets ``adaptive_chunks = True`` and takes this as
    ``split(project, chunks)``; it asks `next_job` for each job. This base class is what a
    project with an explicit chunk, `farm.testing`, or a caller without a controller gets:
    ``default`` units per job. The controller passes a subclass
    (`farm.controller.chunking.AdaptiveChunks`) that sizes jobs from measured times, and
    probes `known` so work done before is found whatever sizes were chosen then.
    """

    #: chunk sizes the adaptive advisor picks from (besides the type's default and "the rest"):
    #: each step at most 1.5x the last, so a re-run can find earlier jobs with a few lookups
    LADDER: ClassVar[tuple[int, ...]] = tuple(sorted({
        int(base * 2 ** k) for k in range(21) for base in (1, 1.5)} - {0}))

    def size(self, remaining: int, default: int) -> int:
        """Units for the next job: 1 .. ``remaining``. ``default``: the type's fixed chunk."""
        return max(1, min(default, remaining))

    def known(self, job: Job) -> bool:
        """Whether ``job`` is done already (this run before a restart, or the job cache)."""
        return False

    def next_job(self, remaining: int, default: int, make: Callable[[int], Job],
                 limit: int | None = None, fixed: bool = False,
                 rest: Callable[[int, int], int] | None = None) -> Job:
        """The next job, made by ``make(units)`` for the next ``units`` of ``remaining`` units.

        A job done before at one of the sizes this advisor may choose (`candidates`) is
        preferred, largest first, so reuse and resume keep working when sizes changed;
        otherwise `size` decides. ``make`` must be a pure function of the units it is given
        (the job's key naming its units, e.g. a frame range), and the job's ``units`` is set.
        ``limit``: the most units this job may take (a boundary jobs do not cross, such as the
        end of a row of metatiles; it is also a size looked for); ``remaining`` still counts all
        units left in the run, so the tail is split over the whole run.
        ``fixed``: new jobs take ``default`` units (a chunk the project wrote), not `size`'s;
        done ones are still looked for.
        ``rest(units, n)``: how many jobs the units after this job (of ``units``) make at ``n``
        units a job, for a type whose jobs stop at boundaries (maptiles' rows); None:
        ``ceil(units left / n)``. The controller's advisor counts the run's jobs with it.
        """
        cap = remaining if limit is None else max(1, min(limit, remaining))
        for units in self.candidates(cap, default):
            job = make(units)
            if self.known(job):
                return _with_units(job, units)
        units = min(max(1, default) if fixed else self.size(remaining, default), cap)
        return _with_units(make(units), units)

    def candidates(self, remaining: int, default: int) -> list[int]:
        """Sizes to look for done jobs at, largest first (none for a fixed chunk)."""
        return []


def _with_units(job: Job, units: int) -> Job:
    if job.units == units:
        return job
    return Job(job.key, job.params, job.inputs, job.deps, units)


class MediaType:
    """Base class for a media type. Subclass it and register it (see `farm.hookspecs`)."""

    #: the name projects use in ``[project] media_type``; also the settings table name
    name: ClassVar[str] = ""
    #: one line for ``farm plugins``
    description: ClassVar[str] = ""
    #: capabilities an agent must advertise to get this media type's jobs
    requirements: ClassVar[tuple[str, ...]] = ()
    #: seconds before a job is killed and retried (``[jobs] timeout`` overrides)
    default_timeout: ClassVar[float] = 600.0
    #: what progress counts beside jobs, plural ("tiles", "frames", "seconds"); see `units`
    unit: ClassVar[str] = "jobs"
    #: True: `split` takes a second argument, a `ChunkAdvisor`, and asks it how many units each
    #: job groups (frames per chunk); the controller sizes jobs from measured times
    adaptive_chunks: ClassVar[bool] = False

    def available(self) -> str | None:
        """None if this machine can render this media type, else why not (shown to users)."""
        return None

    def configure(self, settings: SettingsReader) -> dict[str, Any]:
        """Validate the project's ``[<name>]`` table and return normalised, msgpack-able settings.

        Raise through ``settings.error(key, message)`` so the error names file, line and key.
        """
        settings.finish()
        return {}

    def renderer_facts(self, settings: Mapping[str, Any]) -> Mapping[str, Any]:
        """What `configure` learned from the renderer, taken from the settings it returned.

        A probed length, a verdict, a value derived from a loaded style: whatever the settings
        hold that only the renderer can compute. The submitter (which runs `configure` with
        renderer checks) sends them with the project; a controller reads the project with
        ``settings.renderer_checks`` False and gets them as ``settings.facts``, which it must
        check (`SettingsReader.facts_reader`: types and bounds) before use, since a remote
        submitter may lie. Each agent's `configure` computes them again; an agent whose
        renderer finds other values fails the job, naming both. Msgpack-able; default: none.
        """
        return {}

    def cache_settings(self, settings: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The settings a job's outputs depend on, for its cache key; None: never reuse results.

        A job whose cache key (media type and plugin version, these settings, the job's key and
        params, and the digests of the assets it reads) matches a finished job's is not
        rendered again: its stored outputs are collated instead. Leave out settings that
        only choose *which* jobs exist (a zoom range), so widening them reuses the rest.
        """
        return settings

    def count(self, project: Project) -> int | None:
        """A cheap total number of jobs (for progress and ETA), or None if unknown."""
        return None

    def units(self, job: Job, project: Project) -> float:
        """How many `unit` one job holds (tiles in a metatile, frames in a chunk, seconds of audio).

        Runs on the controller for every job it pulls from `split`: keep it cheap and pure (the
        job's params and the project's settings). A finite number >= 0; a job that holds none
        of the media (an analysis pass) is 0. Default: 1.0, one job is one unit.
        """
        return 1.0

    def total_units(self, project: Project) -> float | None:
        """How many `unit` the whole project holds, when known up front (for progress and ETA).

        None: unknown (the total is then known once `split` is exhausted). Default: the
        `count` of jobs when `units` is not overridden, else None.
        """
        if type(self).units is MediaType.units:
            return self.count(project)
        return None

    def split(self, project: Project) -> Iterator[Job]:
        """Yield the project's jobs lazily; the controller pulls as agents free up.

        With ``adaptive_chunks = True`` the controller calls ``split(project, chunks)`` with a
        `ChunkAdvisor` instead (see its docstring and docs/plugins.md).
        """
        raise NotImplementedError

    def prewarm(self, work_dir: Path, threads: int) -> None:
        """Called once when a worker that offers only this media type starts, before it has a
        job or a project: start what its first job would otherwise start (a renderer process)
        to overlap it with the farm's start-up. ``work_dir`` and ``threads`` are what that
        job's `RenderContext` will most likely say; `render` must check what it finds and
        replace it where it does not fit. Must not raise; default: nothing."""

    def render(self, job: Job, ctx: RenderContext) -> Mapping[str, Any] | None:
        """Render one job, writing files into ``ctx.output_dir``.

        Return a small msgpack-able result (or None); it reaches `collate` and the
        `render` of jobs that depend on this one. Raise to fail the job: it is retried, up to
        ``[jobs] max_attempts``, unless you raise `farm.errors.JobFailedForGood` (a corrupt
        input, which no retry can fix). Outputs over ``[jobs] max_output_mib`` fail the job.
        """
        raise NotImplementedError

    def collate(
        self,
        job: Job,
        result: Mapping[str, Any] | None,
        outputs: Mapping[str, Path],
        ctx: CollateContext,
    ) -> None:
        """Take in one finished job's outputs (name -> staged file; move or copy them).

        Runs in the controller's collate thread (one per controller: never two collates at
        once, in the order results arrived), off its loop. It must be durable when it returns (the
        job is then journaled as done) and idempotent (after a controller crash a job may be
        collated again). Never at the same time as `finalize`, but on another thread.
        """

    def finalize(self, ctx: CollateContext) -> list[Path]:
        """Called once after every job is collated or failed for good; returns the final output files.

        ``ctx.output_dir`` exists (also for a run with no jobs, or whose jobs were all reused);
        ``ctx.done``, ``ctx.failed`` and ``ctx.reused`` hold the whole run's job keys, across
        controller restarts. A run with failed jobs finalizes too, so the outputs that did
        succeed are kept; there an exception from here is only logged.
        """
        return []

    def release(self, ctx: CollateContext) -> None:
        """Let go of what ``ctx.state`` holds (open files, database connections), so the outputs
        are whole on disk and this process keeps nothing of the run open.

        Called once each time a run ends, in any state: after `finalize` for a run that ends done
        or failed, after the last collate for one cancelled or stopped by the controller's own
        disk; and for a run under way when the controller stops. It runs off the controller's loop
        (in a helper thread; as the controller stops, after its loop ended), never at the same time
        as `collate` or `finalize` of the run, and before the outputs are published for download. Keep it idempotent (``state`` may hold nothing, or be
        released already) and leave ``state`` holding nothing to release; an exception is only
        logged. Default: nothing.
        """

    def preview(self, ctx: PreviewContext) -> Mapping[str, Any] | None:
        """A live preview of the output so far, for the dashboard; None: this type has none.

        Returns a small JSON description of one of the kinds in `farm.preview` (``tiles``,
        ``images``, ``waveform``, ``message``) naming files under ``ctx.output_dir``. Runs in the
        HTTP server's threads, never the controller's loop, possibly while `collate` writes: read
        only ``ctx`` and files (through ``ctx.open`` / ``ctx.files``), keep it bounded (a second's
        work at most; ``ctx.cache`` carries state between calls), and expect half-written files.
        """
        return None
