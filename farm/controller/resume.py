"""A run resumed after a controller restart: what it did before, counted and told at once.

`resume` runs at the end of `farm.controller.run.ProjectRun.__init__`. It counts the units of
the jobs done or failed before (`UnitCounter.resume`), walking a split made as the run makes
its own: with a fresh chunk advisor that finds jobs done at whatever sizes were chosen then (a
plain split of an adaptive media type names other jobs, and would count a fraction of them).
A run with nothing left to run (a controller killed while it finalized) pulls its split to the
end at once, so it finalizes without waiting for an agent and its totals are its jobs'. Each
job the journal has as running when the controller died gets that attempt in its log, so
`farm jobs`, the summary and `farm logs` count the try the restart cut short; an attempt the
job log kept as done (its writer commits apart from the journal's) of a job the journal never
recorded done is marked lost, as the job runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from farm.controller.chunking import AdaptiveChunks
from farm.mediatype import Job

if TYPE_CHECKING:
    from farm.controller.run import ProjectRun

log = logging.getLogger(__name__)

#: the error an interrupted attempt is logged with (its lease id says which one, so a second
#: restart before the job is leased again does not log it twice)
INTERRUPTED = "the controller stopped while it ran (lease {})"
#: the error of an attempt the job log kept as done but the journal never recorded (it runs again)
UNJOURNALED = "the controller stopped before it recorded this result: the job runs again"


def resume(run: ProjectRun) -> None:
    """Count and log what `run` did before a restart (nothing for a new run)."""
    if not run.done_keys and not run.failures:
        _interrupted(run)
        return
    jobs = None
    walked = [0]  # jobs the count's split yielded
    if run.chunks is not None:
        counter = AdaptiveChunks(run.project.target, run._known)
        try:
            jobs = _counted(run.media.split(run.project, counter), walked)
        except Exception as exc:  # the run's own split met it already (`_fail_project`)
            log.info("%s: counting the units done before the restart: split() raised %r",
                     run.project.name, exc)
            return
    if not run.units.resume(run.done_keys, run.failures, jobs):
        if run.chunks is not None and counter.left is not None:
            # until an agent pulls (`take` counts then): the jobs up to the last one done before,
            # and the rest at the sizes chosen then, not the type's count at its default chunk
            run.total = walked[0] + counter.jobs_left()
    elif not run.exhausted:
        while not run.exhausted:  # each a job done or failed before: nothing leased, nothing run
            job = run._pull()
            if job is not None:  # the count's split and the run's disagree after all: it runs
                run.ready.append(job)
        if run.chunks is not None:  # the count as `take` would have said it, had an agent pulled
            run.total = run.done + len(run.failures) + len(run.ready) + len(run.unmet)
    _interrupted(run)


def _counted(jobs: Iterable[Job], walked: list[int]) -> Iterator[Job]:
    """`jobs`, counted in ``walked[0]`` as they are walked."""
    for job in jobs:
        walked[0] += 1
        yield job


def _interrupted(run: ProjectRun) -> None:
    run.logs.unjournaled(run.done_keys, UNJOURNALED)
    for key, lease, agent in run.journal.running_jobs(run.id):
        error = INTERRUPTED.format(lease)
        last = run.logs.last(key)
        if last is None or last["error"] != error:
            run.logs.note(key, agent, "lost", error, None, None)
