"""A dispatch turn with thousands of agents costs O(agents with room), not O(agents): counted, not timed."""

from __future__ import annotations

from pathlib import Path

from farm.controller.events import EventBus
from farm.controller.registry import AgentState
from farm.controller.run import ProjectRun
from farm.controller.scheduler import RESCAN_EVERY_S, Scheduler
from farm.journal import Journal
from farm.plugins import get_media_type
from farm.project import load_project

AGENTS = 2000


def test_a_turn_looks_only_at_agents_whose_leases_ended(tmp_path: Path, synthetic):
    journal = Journal(tmp_path / "journal.sqlite")
    scheduler = Scheduler()
    project = load_project(synthetic(jobs=AGENTS * 3))
    run = ProjectRun("run0", project, get_media_type("synthetic"), journal, events=EventBus())
    journal.add_project(run.id, project.to_wire(), 0, 0.0)
    scheduler.add(run)
    agents = [
        AgentState(
            identity=f"a{i}".encode(),
            id=f"a{i}",
            host="h",
            slots=1,
            prefetch=0,
            caps={"synthetic"},
            missing={},
        )
        for i in range(AGENTS)
    ]
    for a in agents:
        scheduler.registry.add(a)
    assert len(scheduler.dispatch(0.0)) == AGENTS  # the first turn fills every agent
    looked = scheduler.looked_at
    assert scheduler.dispatch(0.01) == [] and scheduler.looked_at == looked  # all full: nobody looked at
    for a in agents[:5]:  # five results come back
        assert scheduler.settle(a, next(iter(a.held))) is not None
    decided = scheduler.dispatch(0.02)
    assert sorted(a.id for a, _ in decided) == sorted(a.id for a in agents[:5])
    assert scheduler.looked_at - looked == 5
    looked = scheduler.looked_at
    scheduler.dispatch(0.02 + RESCAN_EVERY_S)  # the periodic rescan still sees every agent
    assert scheduler.looked_at - looked == AGENTS
    journal.close()


def test_no_run_with_work_costs_no_agent(tmp_path: Path, synthetic):
    journal = Journal(tmp_path / "journal.sqlite")
    scheduler = Scheduler()
    project = load_project(synthetic(jobs=3))
    run = ProjectRun("run0", project, get_media_type("synthetic"), journal, events=EventBus())
    journal.add_project(run.id, project.to_wire(), 0, 0.0)
    scheduler.add(run)
    for i in range(AGENTS):
        scheduler.registry.add(
            AgentState(
                identity=f"a{i}".encode(),
                id=f"a{i}",
                host="h",
                slots=1,
                prefetch=0,
                caps={"synthetic"},
                missing={},
            )
        )
    assert sum(len(leases) for _, leases in scheduler.dispatch(0.0)) == 3
    looked = scheduler.looked_at
    for t in (0.01, 1.0, 2.0):  # every job is out: the idle agents are not looked at, even on a rescan
        assert scheduler.dispatch(t) == []
    assert scheduler.looked_at == looked
    journal.close()
