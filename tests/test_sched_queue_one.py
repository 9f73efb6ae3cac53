"""An agent whose last job was short (up to `QUEUE_ONE_S`) holds one job queued behind each slot's,
so its worker has the next job when the running one ends (a 60 ms frame no longer waits a round trip
to the controller for it); after a long job, or before any, it holds only what its slots run.

The scheduler's own objects, in process (its rules, not its sockets).
"""

from __future__ import annotations

from farm.controller.events import EventBus
from farm.controller.registry import QUEUE_ONE_S, AgentState
from farm.controller.run import ProjectRun
from farm.controller.scheduler import Scheduler
from farm.journal import Journal
from farm.plugins import get_media_type
from farm.project import load_project


def _agent(name: str, *, slots: int = 1, prefetch: int = 256) -> AgentState:
    return AgentState(identity=name.encode(), id=name, host="h", slots=slots, prefetch=prefetch,
                      caps={"synthetic"}, missing={})


def test_capacity_follows_the_last_jobs_time():
    agent = _agent("a", slots=2)
    assert agent.capacity() == 2  # no job time yet: nothing queued
    agent.observe(1.2, "run0")  # a slot's first job, with its renderer's start
    assert agent.capacity() == 2
    agent.observe(0.06, "run0")  # the next frame: the average is still 0.97 s, the last job short
    assert agent.capacity() == 4  # one queued behind each slot
    agent.observe(QUEUE_ONE_S + 0.1, "run0")  # frames got heavier: nothing queued from now on
    assert agent.capacity() == 2
    assert _agent("b", prefetch=0).capacity() == 1  # an agent that asked for no prefetch gets none
    none_asked = _agent("c", prefetch=0)
    none_asked.observe(0.06, "run0")
    assert none_asked.capacity() == 1


def test_an_agent_of_short_jobs_gets_the_next_one_while_it_runs_one(tmp_path, synthetic):
    journal = Journal(tmp_path / "journal.sqlite")
    scheduler = Scheduler()
    project = load_project(synthetic(jobs=6))
    run = ProjectRun("run0", project, get_media_type("synthetic"), journal, events=EventBus())
    journal.add_project(run.id, project.to_wire(), 0, 0.0)
    scheduler.add(run)
    a = _agent("a")
    scheduler.registry.add(a)
    first = [lease for _, leases in scheduler.dispatch(0.0) for lease in leases]
    assert [lease.job.key for lease in first] == ["job-0000000"]  # its job time is unknown: one
    a.observe(0.08, run.id)
    run.succeeded(scheduler.settle(a, first[0].id), None, {})
    now = [lease.job.key for _, leases in scheduler.dispatch(1.0) for lease in leases]
    assert now == ["job-0000001", "job-0000002"]  # one to run, one queued behind it
    journal.close()
