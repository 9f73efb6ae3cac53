"""The scheduler's decisions (farm.controller.scheduler), without sockets: real runs, a real journal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from farm.controller.events import EventBus
from farm.controller.registry import AgentState
from farm.controller.run import ProjectRun
from farm.controller.scheduler import EXPIRY_GRACE_S, Scheduler
from farm.journal import Journal
from farm.plugins import get_media_type
from farm.project import load_project


def agent(agent_id: str, *, slots: int = 1, caps: tuple[str, ...] = ("synthetic",),
          broken: str | None = None) -> AgentState:
    return AgentState(identity=agent_id.encode(), id=agent_id, host="h", slots=slots, prefetch=0, caps=set(caps),
                      missing={}, broken=broken)


@pytest.fixture
def farm(tmp_path: Path, synthetic: Callable[..., Path]):
    """A scheduler and a maker of runs on it: make(jobs, priority=0) -> ProjectRun."""
    journal = Journal(tmp_path / "journal.sqlite")
    bus = EventBus()
    scheduler = Scheduler()
    counter = iter(range(100))

    def make(jobs: int = 4, *, priority: int = 0, **settings: object) -> ProjectRun:
        project = load_project(synthetic(jobs=jobs, **settings))
        run = ProjectRun(f"run{next(counter)}", project, get_media_type("synthetic"), journal, priority=priority,
                         events=bus)
        journal.add_project(run.id, project.to_wire(), priority, 0.0)
        scheduler.add(run)
        return run

    scheduler.make = make
    scheduler.bus = bus
    yield scheduler
    journal.close()


def given(decisions) -> dict[str, list[str]]:
    return {a.id: [f"{lease.run.id}/{lease.job.key}" for lease in leases] for a, leases in decisions}


def test_a_higher_priority_run_goes_first(farm):
    low, high = farm.make(4), farm.make(4, priority=5)
    farm.registry.add(agent("a", slots=2))
    decided = given(farm.dispatch(0.0))
    assert [j.split("/")[0] for j in decided["a"]] == [high.id, high.id]
    assert not low.leases


def test_equal_priorities_share_the_agents(farm):
    one, two = farm.make(4), farm.make(4)
    for name in ("a", "b"):
        farm.registry.add(agent(name))
    farm.dispatch(0.0)
    assert len(one.leases) == 1 and len(two.leases) == 1


def test_an_agent_gets_its_capacity_and_no_more(farm):
    farm.make(10)
    node = agent("a", slots=3)
    farm.registry.add(node)
    assert len(given(farm.dispatch(0.0))["a"]) == 3
    assert farm.dispatch(0.0) == []  # full
    lease_id = next(iter(node.held))
    assert farm.settle(node, lease_id) is not None and farm.settle(node, lease_id) is None  # a repeat is stale
    assert len(given(farm.dispatch(0.0))["a"]) == 1
    assert len(farm.leases) == len(node.held) == 3 and farm.max_held == 3


def test_an_agent_without_the_media_type_gets_nothing_and_the_run_says_why(farm):
    run = farm.make(2)
    farm.registry.add(agent("a", caps=("frames",)))
    assert farm.dispatch(0.0) == []
    assert "a: does not have this media type" in farm.stalled(run)
    farm.registry.add(agent("b"))
    assert given(farm.dispatch(0.0)) == {"b": [f"{run.id}/job-0000000"]}
    assert farm.stalled(run) is None


def test_a_departed_agents_jobs_go_to_another_without_an_attempt(farm):
    run = farm.make(1)
    first, second = agent("a"), agent("b", slots=0)
    farm.registry.add(first)
    farm.registry.add(second)
    farm.dispatch(0.0)
    assert farm.leave(first, "its connection closed") == 1 and farm.leave(first, "again") is None
    second.slots = 1
    assert given(farm.dispatch(1.0)) == {"b": [f"{run.id}/job-0000000"]}
    assert not run.attempts and not farm.registry.get(b"a")


def test_a_reconnecting_agent_keeps_what_it_holds_and_loses_the_rest(farm):
    farm.make(4)
    first = agent("a", slots=2)
    farm.registry.add(first)
    held = sorted(first.held) if farm.dispatch(0.0) else []
    again = AgentState(identity=b"a2", id="a", host="h", slots=2, prefetch=0, caps={"synthetic"}, missing={},
                       held={held[0], "from-a-stranger"})
    farm.join(again, first)
    assert farm.leases[held[0]].agent == b"a2" and held[1] not in farm.leases
    assert list(farm.registry) == [again]


def test_an_expired_lease_is_withdrawn_and_counts_an_attempt(farm):
    run = farm.make(1)
    node = agent("a")
    farm.registry.add(node)
    (_, [lease]), = farm.dispatch(0.0)
    assert farm.expired(lease.deadline + EXPIRY_GRACE_S - 0.5) == []
    assert farm.expired(lease.deadline + max(EXPIRY_GRACE_S, run.timeout / 2) + 1) == [lease]
    assert not node.held and not farm.leases and run.attempts[lease.job.key] == 1
    assert [j.key for j in run.ready] == [lease.job.key]  # to be retried


def test_a_blocklisted_agent_gets_no_jobs_unless_no_one_else_can_run_them(farm):
    run = farm.make(3)
    bad, good = agent("bad"), agent("good", slots=0)
    run.conduct.blocklist["bad"] = "failed 3 jobs that then succeeded on other agents"
    farm.registry.add(bad)
    farm.registry.add(good)
    good.slots = 1
    assert given(farm.dispatch(0.0)) == {"good": [f"{run.id}/job-0000000"]}
    farm.registry.remove(b"good")
    assert given(farm.dispatch(0.0)) == {"bad": [f"{run.id}/job-0000001"]}  # lifted: the run has no one else
    assert "bad" not in run.blocklist


def test_a_stuck_run_on_a_closed_farm_is_aborted_with_the_reason(farm):
    run = farm.make(2)
    farm.registry.add(agent("a", broken="its workers die at start"))
    farm.abort_stuck(0.0, [None])
    farm.abort_stuck(10.0, [None])
    assert run.error and "broken" in run.error


def test_cancel_withdraws_every_lease(farm):
    run = farm.make(5)
    node = agent("a", slots=3)
    farm.registry.add(node)
    farm.dispatch(0.0)
    withdrawn = farm.cancel(run)
    assert len(withdrawn) == 3 and not farm.leases and not node.held and run.state == "cancelled"
    assert farm.dispatch(0.0) == []


def test_decisions_are_announced(farm):
    run = farm.make(2)
    farm.registry.add(agent("a", slots=2))
    farm.dispatch(0.0)
    types = [(e.type, e.job, e.agent) for e in farm.bus.buffer]
    assert types == [("run.started", None, None), ("job.started", "job-0000000", "a"),
                     ("job.started", "job-0000001", "a")]
    assert all(e.run == run.id for e in farm.bus.buffer)
