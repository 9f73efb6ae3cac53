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
from typing import TYPE_CHECKING, Any

from farm.controller.collator import Pending, collate_failed, settle
from farm.controller.run import _RENDERED, Lease, ProjectRun
from farm.errors import ProtocolError
from farm.protocol import JobResult

if TYPE_CHECKING:
    from farm.controller.registry import AgentState

#: a job rendered and collated, waiting to be recorded: (lease, its result, duration s, log text)
Done = tuple["Lease", Any, float, "str | None"]


def check_durations(results: list[dict[str, Any]]) -> None:
    """Every result's run time is a time in seconds (before any is settled): a NaN would poison the
    agent's mean, and dispatch. Raises `ProtocolError`."""
    for r in results:
        duration = r["duration"]
        if not 0.0 <= duration < math.inf:
            raise ProtocolError(f"RESULTS: duration {duration!r} is not a time in seconds")


def settle_results(side: Any, agent: AgentState, results: list[dict[str, Any]],
                   payloads: list[bytes]) -> None:
    """Settle one RESULTS message's results (maps of the RESULT shape, checked) from `agent`, in
    order; `side`: the controller (its scheduler, collator and `_result`, the one-by-one way)."""
    scheduler, collator = side.scheduler, side.collator
    scheduler.answered(agent, [r["lease"] for r in results])
    current = scheduler.current
    group: list[Done] = []
    group_run: ProjectRun | None = None
    offset = 0
    for r in results:
        names = r["files"]
        files = payloads[offset:offset + len(names)] if names else []
        offset += len(names)
        lease = current(agent, r["lease"])
        run = lease.run if lease is not None else None
        if run is None or not (r["ok"] and not names and plain(run, lease, collator)):
            if group:
                record_done(group_run, agent, group)
                group = []
            side._result(agent, r, files, lease)
            continue
        if run is not group_run and group:
            record_done(group_run, agent, group)
            group = []
        group_run = run
        agent.observe(float(r["duration"]))
        key = lease.job.key
        del run.leases[key]
        run.progress.pop(key, None)
        if collate_here(run, lease, agent, r):
            group.append((lease, r["result"], r["duration"], r.get("log")))
            continue
        if group:  # its collate raised: settled as the collate thread's outcome is, after the group
            record_done(group_run, agent, group)
            group = []
        if settle(run.collating[key]) and collator.stopped is not None:
            collator.stopped(run)
    if group:
        record_done(group_run, agent, group)


def plain(run: ProjectRun, lease: Lease, collator: Any) -> bool:
    """A success of this lease may be settled in a group: collated on the loop now (the collate
    thread idle), nothing else to feed (job sizes, the job cache), its run still collating."""
    return (collator.idle and run.handoff == collator.submit and run.chunks is None and run.stopped is None
            and run.state != "cancelled" and lease.job.key not in run.cache_keys)


def collate_here(run: ProjectRun, lease: Lease, agent: AgentState, r: dict[str, Any]) -> bool:
    """Collate one plain result on the loop, as `farm.controller.collator.collate` does (no files);
    False if it raised: then its `Pending`, with the error, waits in ``run.collating`` for `settle`."""
    made = False
    try:
        if not run.output_made:  # once per run
            run.ctx.output_dir.mkdir(parents=True, exist_ok=True)
        run.output_made = False  # until collate returns: a folder removed by hand is made again
        made = True
        run.media.collate(lease.job, r["result"], {}, run.ctx)
        run.output_made = True
        return True
    except Exception as exc:
        lease.result = JobResult.from_wire(r)  # its log and duration, for the job's log
        pending = Pending(run, lease.job, r["result"], {}, lease, agent)
        collate_failed(pending, exc, made)
        run.collating[lease.job.key] = pending
        return False


def record_done(run: ProjectRun, agent: AgentState, group: list[Done]) -> None:
    """The jobs of `group` (all `run`'s, rendered on `agent`, collated) are done: what settling and
    `ProjectRun.collated` record for each, one kind at a time (attempts, journal rows, events)."""
    agent.done += len(group)
    agent_id = agent.id
    keys = [lease.job.key for lease, _, _, _ in group]
    run.logs.notes("done", [(key, agent_id, duration, log)
                            for key, (_, _, duration, log) in zip(keys, group)])
    if not run.conduct.succeeded_all(keys, agent_id):  # strikes, which may blocklist: events in between
        for key, (_, result, _, _) in zip(keys, group):
            for blocked in run.conduct.succeeded(key, agent_id):
                run._blocklisted(blocked, run.blocklist[blocked])
            run._done(key, result, agent_id)
        return
    run.journal.jobs_done(run.id, [(key, result) for key, (_, result, _, _) in zip(keys, group)])
    cache_keys = run.cache_keys
    if cache_keys:
        for key in keys:
            cache_keys.pop(key, None)
    done, failed = run.outcomes["done"], run.outcomes["failed"]
    job_done = run.units.job_done
    for key in keys:
        done.add(key)
        failed.discard(key)
        job_done(key)
    run.done += len(keys)
    run.emit_many("job.done", run.id, [(key, agent_id) for key in keys], _RENDERED)
    if run.waiting:
        for key in keys:
            run.release(key)
