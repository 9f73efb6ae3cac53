"""A RESULTS message settled in one pass: its plain successes recorded a run's group at a time.

An agent sends its results in messages of tens to hundreds. Most are plain: the job rendered,
no output files, its run collates on the loop (`farm.controller.collator`: nothing waits for the
collate thread), no job sizes or cache to feed. For those the loop settles each lease and calls
the media type's `collate` as before, one job at a time, in the message's order, and then records
the group's outcome in one step per kind: the job logs' attempts, the journal's done rows (one
call), the `job.done` events (one call, one event per job with the same fields), units and
counters. Anything else (a failure, a hand-back, a stale lease, output files, a collate that
raises) goes the one-by-one way (`AgentSide._result`), after the group before it is recorded,
so journal rows, events and attempts come in the order one-by-one settlement gives them.

The checks stay where the message enters: `farm.protocol.unpack` checks each result's shape,
`check_durations` its time, and a lease counts only if it is the current lease of its job and
held by the agent that answers (`settle_lease`), as `Scheduler.settle` says.
"""

from __future__ import annotations

import math
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

from farm.controller.collator import Pending, collate_failed, folder_gone, settle
from farm.controller.run import _RENDERED, Lease, ProjectRun
from farm.errors import ProtocolError
from farm.protocol import R_DURATION, R_LEASE, R_LOG, R_RESULT, JobResult

if TYPE_CHECKING:
    from farm.controller.registry import AgentState
    from farm.mediatype import Job


class Group:
    """Jobs of one run rendered on one agent and collated, to be recorded done together: the jobs and
    their results' arrays, side by side as the message is read; what `record_done` needs of them is
    taken out in C loops (no tuple made per job)."""

    __slots__ = ("run", "agent", "jobs", "wire")

    def __init__(self, run: ProjectRun, agent: AgentState) -> None:
        self.run, self.agent = run, agent
        self.jobs: list[Job] = []
        self.wire: list[list[Any]] = []  # each job's result as it came (`farm.protocol.RESULT_ROW`)

    @property
    def keys(self) -> list[str]:
        return list(map(_KEY, self.jobs))

    @property
    def results(self) -> list[Any]:
        """For the journal's rows."""
        return list(map(_RESULT, self.wire))

    @property
    def durations(self) -> list[float]:
        """Seconds, for the attempts (and `logs`: each its log, or None)."""
        return list(map(_DURATION, self.wire))

    @property
    def logs(self) -> list[str | None]:
        return list(map(_LOG, self.wire))


_KEY, _LEASE, _RESULT = attrgetter("key"), itemgetter(R_LEASE), itemgetter(R_RESULT)
_DURATION, _LOG = itemgetter(R_DURATION), itemgetter(R_LOG)


def check_durations(results: list[list[Any]]) -> None:
    """Every result's run time is a time in seconds (before any is settled): a NaN would poison the
    agent's mean, and dispatch. Raises `ProtocolError`."""
    for duration in map(_DURATION, results):
        if not 0.0 <= duration < math.inf:
            raise ProtocolError(f"RESULTS: duration {duration!r} is not a time in seconds")


def settle_results(side: Any, agent: AgentState, results: list[list[Any]],
                   payloads: list[bytes]) -> None:
    """Settle one RESULTS message's results (`farm.protocol.RESULT_ROW` arrays, checked) from `agent`,
    in order; `side`: the controller (its scheduler, collator and `_result`, the one-by-one way)."""
    scheduler, collator = side.scheduler, side.collator
    scheduler.answered(agent, list(map(_LEASE, results)))
    current = scheduler.current
    group: Group | None = None
    grouping = None  # the run whose successes `plain` said may be grouped (its state is the same until
    # a result is settled another way: then asked again)
    offset = 0
    for r in results:
        lease_id, ok, _, names, _, _, duration, _, _ = r
        lease = current(agent, lease_id)
        run = lease.run if lease is not None else None
        if run is None or names or not ok or not (run is grouping or plain(run, collator)) \
                or lease.job.key in run.cache_keys:
            if group is not None:
                record_done(group)
                group = None
            grouping = None
            side._result(agent, r, payloads[offset:offset + len(names)] if names else [], lease)
            offset += len(names)
            continue
        grouping = run
        if group is not None and group.run is not run:
            record_done(group)
            group = None
        agent.observe(float(duration), run.id)
        key = lease.job.key
        del run.leases[key]
        run.progress.pop(key, None)
        if collate_here(run, lease, agent, r, group is None):
            if group is None:
                group = Group(run, agent)
                jobs, wire = group.jobs, group.wire
            jobs.append(lease.job)
            wire.append(r)
            continue
        if group is not None:  # its collate raised: settled as the collate thread's outcome is, after them
            record_done(group)
            group = None
        grouping = None
        if settle(run.collating[key]) and collator.stopped is not None:
            collator.stopped(run)
    if group is not None:
        record_done(group)


def plain(run: ProjectRun, collator: Any) -> bool:
    """A success of this run (of a job without a job cache key) may be settled in a group: collated
    on the loop now (the collate thread idle), nothing else to feed (job sizes), the run collating."""
    return (collator.idle and run.handoff == collator.submit and run.chunks is None and run.stopped is None
            and run.state != "cancelled")


def collate_here(run: ProjectRun, lease: Lease, agent: AgentState, r: list[Any], first: bool) -> bool:
    """Collate one plain result on the loop, as `farm.controller.collator.collate` does (no files);
    False if it raised or the run's output folder went: then its `Pending`, with the error, waits
    in ``run.collating`` for `settle`. `first`: the first of its group, where the folder is checked
    (once a message: a folder gone later in it is found by the next message or the finalize)."""
    made = False
    pending = None
    try:
        if not run.output_made:  # once per run
            run.ctx.output_dir.mkdir(parents=True, exist_ok=True)
            run.output_folder.made()
        run.output_made = False  # until collate returns: a folder removed by hand is made again
        made = True
        if first and run.output_folder.gone() is not None:
            pending = Pending(run, lease.job, r[R_RESULT], {}, lease, agent)
            folder_gone(pending)
        else:
            run.media.collate(lease.job, r[R_RESULT], {}, run.ctx)
            run.output_made = True
            return True
    except Exception as exc:
        pending = Pending(run, lease.job, r[R_RESULT], {}, lease, agent)
        if not (made and folder_gone(pending)):
            collate_failed(pending, exc, made)
    lease.result = JobResult.from_wire(r)  # its log and duration, for the job's log
    run.collating[lease.job.key] = pending
    return False


def record_done(group: Group) -> None:
    """The jobs of `group` are done: what settling and `ProjectRun.collated` record for each, one
    kind at a time (journal rows, attempts, events).

    A journal that raises on the way (its disk: the controller stops the runs) sends the jobs not
    yet recorded back to be run again, as a crash would have: none is left neither leased nor done.
    """
    run, agent, keys, results = group.run, group.agent, group.keys, group.results
    run.output_folder.keep(run.journal, run.id)  # before its first job is journaled done (as `settle`)
    if not run.conduct.succeeded_all(keys, agent.id):  # strikes, which may blocklist: events in between
        durations, logs = group.durations, group.logs
        for i, (key, result) in enumerate(zip(keys, results, strict=True)):
            run.logs.notes("done", [(key, agent.id, durations[i], logs[i])])
            agent.done += 1
            for blocked in run.conduct.succeeded(key, agent.id):
                run._blocklisted(blocked, run.blocklist[blocked])
            try:
                run._done(key, result, agent.id)
            except BaseException:
                run.ready.extendleft(reversed(group.jobs[i:]))
                raise
        return
    try:
        run.journal.jobs_done(run.id, keys, results)
    except BaseException:
        run.ready.extendleft(reversed(group.jobs))
        raise
    agent.done += len(keys)
    agent_id = agent.id
    run.logs.notes_from("done", agent_id, keys, group.durations, group.logs)
    cache_keys = run.cache_keys
    if cache_keys:
        for key in keys:
            cache_keys.pop(key, None)
    run.outcomes["done"].add_all(keys)
    run.outcomes["failed"].discard_all(keys)
    run.units.jobs_done(keys)
    run.done += len(keys)
    run.emit_many("job.done", run.id, agent_id, keys, _RENDERED)
    if run.waiting:
        for key in keys:
            run.release(key)
