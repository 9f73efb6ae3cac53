"""A job tried before is never prefetched: it waits for a free slot, not behind a job that may hang.

The scheduler's own objects, in process (its rules, not its sockets): an agent that runs fast jobs
holds a prefetch; had its retry joined that queue behind a job that then hangs, an agent joining
later would have sat idle while the retry waited for the hang's timeout.
"""

from __future__ import annotations

from pathlib import Path

from farm.controller.events import EventBus
from farm.controller.registry import AgentState
from farm.controller.run import ProjectRun
from farm.controller.scheduler import Scheduler
from farm.journal import Journal
from farm.plugins import get_media_type
from farm.project import load_project


def _agent(name: str, *, slots: int = 1) -> AgentState:
    state = AgentState(identity=name.encode(), id=name, host="h", slots=slots, prefetch=8,
                       caps={"synthetic"}, missing={})
    state.avg_job_s = 0.001  # fast jobs: a prefetch of up to 8 beyond its slots
    return state


def _setup(tmp_path: Path, synthetic, jobs: int) -> tuple[Scheduler, ProjectRun, Journal]:
    journal = Journal(tmp_path / "journal.sqlite")
    scheduler = Scheduler()
    project = load_project(synthetic(jobs=jobs, extra="[jobs]\nmax_attempts = 3\n"))
    run = ProjectRun("run0", project, get_media_type("synthetic"), journal, events=EventBus())
    journal.add_project(run.id, project.to_wire(), 0, 0.0)
    scheduler.add(run)
    return scheduler, run, journal


def _keys(decisions, agent: AgentState) -> list[str]:
    return [lease.job.key for a, leases in decisions if a is agent for lease in leases]


def test_a_retry_waits_for_a_free_slot_and_goes_to_an_agent_that_joins(tmp_path, synthetic):
    scheduler, run, journal = _setup(tmp_path, synthetic, jobs=3)
    a = _agent("a")
    scheduler.registry.add(a)
    assert _keys(scheduler.dispatch(0.0), a) == ["job-0000000", "job-0000001", "job-0000002"]  # prefetched
    first = next(lease for lease in run.leases.values() if lease.job.key == "job-0000000")
    run.failed(scheduler.settle(a, first.id), "boom", "")  # job-0 fails; job-1 is now running (and hangs)
    assert scheduler.dispatch(0.1) == []  # every slot of a is taken: the retry is not queued behind them
    assert list(run.ready) and run.ready[0].key == "job-0000000"
    b = _agent("b")
    scheduler.registry.add(b)
    assert _keys(scheduler.dispatch(0.2), b) == ["job-0000000"]  # the agent that joined runs it at once
    journal.close()


def test_a_retry_goes_back_to_the_only_agent_once_it_has_a_free_slot(tmp_path, synthetic):
    scheduler, run, journal = _setup(tmp_path, synthetic, jobs=30)
    a = _agent("a")
    scheduler.registry.add(a)
    held = _keys(scheduler.dispatch(0.0), a)
    assert len(held) == 9  # one slot and a prefetch of eight
    leases = {lease.job.key: lease for lease in run.leases.values()}
    run.failed(scheduler.settle(a, leases[held[0]].id), "boom", "")
    # a has a slot's worth still queued: nothing new is prefetched ahead of the retry either
    assert scheduler.dispatch(0.1) == []
    for key in held[1:]:
        run.succeeded(scheduler.settle(a, leases[key].id), None, {})
    assert _keys(scheduler.dispatch(0.2), a)[0] == held[0]  # a free slot: the retry first, then new jobs
    journal.close()
