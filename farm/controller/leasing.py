"""New jobs leased a dispatch turn's group at a time: what `ProjectRun.lease` records for each, one
kind at a time.

A dispatch turn hands an agent tens to hundreds of new jobs. `ProjectRun.lease` makes each its
lease id and `Lease`, announces its `job.started` and journals its running row: three calls deep
per job. `take_new` pulls the run's next jobs and makes their leases in a loop (each in
``run.leases`` at once: a later job may depend on it), then records them in one step per kind:
`run.started` before the first lease of the run, the `job.started` events in one
`EventBus.publish_each` call (one event per job, numbered one by one, the same fields), the running
rows in one `Journal.jobs_started` call (the same rows; a batch that fills on the way commits
where it would have).

The jobs are pulled a turn's worth at a time (`itertools.islice`: the plugin's generator resumed from
C, what it yielded before a raise kept) and admitted in order (`ProjectRun.admit`, which the per-job
path also uses); a pull whose jobs are all plain (`farm.keycheck.plain_split`: `Job`s without
dependencies, their keys matched at once) of a run with nothing done or failed before skips the
per-job checks it has no use for, and is leased in C loops: the same leases, ids and order. A run
that fails at a job (a bad key, a raise) leases none after it (`tests/test_dispatch_lean.py`).

Taken so only where nothing between two pulls may announce or journal anything (`groupable`): no
job cache in play (`farm.controller.collator.reuse` would collate a cached job's outputs there)
and no chunk advisor (its `split` reads the journal). A pulled job with dependencies has the
leases before it recorded first (`Starting.record`, from `ProjectRun._pull`): one of them failed
for good fails it, a `job.failed` that comes after their `job.started`, as one by one. So events,
rows and leases come in the order `ProjectRun.lease` gives them (`tests/test_lease_batch.py`).

A journal that raises while the group is recorded stops the controller's runs (its disk) as it
would one by one; every lease pulled is in ``run.leases`` (withdrawn with the run), none is sent.
"""

from __future__ import annotations

import itertools
import operator
from itertools import repeat
from typing import TYPE_CHECKING, Any

from farm.controller.lease import Lease
from farm.ids import BadIdentifier
from farm.keycheck import check_job_keys, plain_split
from farm.mediatype import Job
from farm.plugincode import describe_bug

if TYPE_CHECKING:
    from farm.controller.registry import AgentState
    from farm.controller.run import ProjectRun


_key_of = operator.attrgetter("key")


def groupable(run: ProjectRun) -> bool:
    """The run's new jobs may be leased a group at a time: no job cache, no chunk advisor."""
    return run.chunks is None and (run.cache is None or not run.cacheable)


class Starting:
    """The leases a `take_new` made, and how many of them are recorded."""

    __slots__ = ("run", "agent", "now", "leases", "recorded")

    def __init__(self, run: ProjectRun, agent: AgentState, now: float) -> None:
        self.run, self.agent, self.now = run, agent, now
        self.leases: list[Lease] = []
        self.recorded = 0

    def record(self) -> None:
        """Announce and journal the leases made since the last call, in order."""
        fresh = self.leases[self.recorded:]
        if not fresh:
            return
        self.recorded = len(self.leases)
        run, agent_id = self.run, self.agent.id
        if run.first_dispatch_s is None:  # `now` may predate a resumed run's start
            run.first_dispatch_s = max(0.0, self.now - run.started_mono)
            run.emit("run.started", run.id)
        keys, ids = [lease.job.key for lease in fresh], [lease.id for lease in fresh]
        run.emit_each("job.started", run.id, agent_id, "lease", keys, ids)
        run.journal.jobs_started(run.id, keys, ids, agent_id)


def take_new(run: ProjectRun, agent: AgentState, n: int, now: float) -> list[Lease]:
    """Lease up to `n` of the run's next jobs to `agent` (`ProjectRun.take`'s new jobs, for a
    `groupable` run), recorded together; returns the leases in order."""
    starting = run.starting = Starting(run, agent, now)
    leases, by_key = starting.leases, run.leases
    prefix, numbers = run._lease_prefix, run._lease_numbers
    identity, agent_id, deadline = agent.identity, agent.id, now + run.timeout
    admit, lease_id = run.admit, f"{prefix}%x".__mod__
    try:
        while len(leases) < n and not run.exhausted and run.active:
            wanted = n - len(leases)
            pulled, error = _pull(run, wanted)
            checked = plain_split(pulled)
            if checked and not run.done_keys and not run.failures:
                # each one `admit` would pass as it is (no dependencies, none done or failed before):
                # leased in C loops, the same leases in the same order
                run.units.seen_all(pulled)
                fresh = list(map(Lease, map(lease_id, itertools.islice(numbers, len(pulled))), repeat(run),
                                 pulled, repeat(identity), repeat(agent_id), repeat(now), repeat(deadline)))
                by_key.update(zip(map(_key_of, pulled), fresh))
                leases += fresh
            else:
                for job in pulled:
                    job = admit(job, checked)
                    if job is not None:
                        lease = Lease(lease_id(next(numbers)), run, job, identity, agent_id, now, deadline)
                        by_key[job.key] = lease
                        leases.append(lease)
                    elif run.exhausted:  # the run failed at this job: none after it is looked at
                        break
            if not run.exhausted:
                if error is not None:
                    split_failed(run, error)
                elif len(pulled) < wanted:
                    run.exhausted = True
    finally:
        run.starting = None
        starting.record()
    return leases


def well_made(run: ProjectRun, job: Any) -> bool:
    """What the run's `split` yielded is a `Job` whose keys are safe; else the run fails, saying why."""
    if not isinstance(job, Job):
        run._fail_project(f"split() yielded {job!r}, not a farm.mediatype.Job")
        return False
    try:  # keys travel to agents, which may name files after them
        check_job_keys(job)
    except BadIdentifier as exc:
        run._fail_project(f"split() yielded a bad job: {exc}")
        return False
    return True


def split_failed(run: ProjectRun, exc: Exception) -> None:
    """The run's `split` raised `exc`: the run fails, with the plugin's bug described."""
    run._fail_project(f"split() failed: {describe_bug(exc, run.media)}")


def _pull(run: ProjectRun, wanted: int) -> tuple[list[Any], Exception | None]:
    """Up to `wanted` of what the run's `split` yields next (fewer: it ended), and what it raised."""
    pulled: list[Any] = []
    try:
        for job in itertools.islice(run._jobs, wanted):  # the generator's next called in C
            pulled.append(job)
    except Exception as exc:
        return pulled, exc
    return pulled, None
