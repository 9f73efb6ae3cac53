"""Live control with real agents: pause, resume, priority, drain, and all of it across a restart."""

from __future__ import annotations

from conftest import restartable_url, wait_for
from control_helpers import EventLog

from farm.client import Client
from farm.controller.server import Controller
from farm.project import load_project


def _a_second_passes(log: EventLog, run: str) -> None:
    """Let the controller's loop go on for a while (it announces a run's progress every 0.2 s)."""
    since = log.controller.events.last
    wait_for(lambda: len(log.of("progress", run, after=since)) >= 5, 30, "the controller to go on")


def test_pause_stops_new_leases_and_resume_finishes_the_run(controller, agents, synthetic):
    log = EventLog(controller)
    agents(controller.url, 1, slots=2)
    with Client(controller.url) as client:
        run = client.submit(load_project(synthetic(jobs=12, sleep=0.3, name="pausable")))
        wait_for(lambda: log.of("job.done", run), 60, "a first job done")
        reply = client.pause(run)
        assert reply["project"] == run and reply["paused"] is True
        paused = log.seq_of("run.paused", run)
        # the jobs the agent holds finish; nothing new is leased
        wait_for(lambda: client.project(run)["running"] == 0, 60, "the jobs in flight to finish")
        held = client.project(run)
        _a_second_passes(log, run)
        assert not log.settled().of("job.started", run, after=paused)
        now = client.project(run)
        assert now["paused"] is True and now["state"] == "running" and now["done"] == held["done"] < 12
        assert next(p for p in client.status()["projects"] if p["id"] == run)["paused"] is True
        assert client.resume(run)["paused"] is False
        wait_for(lambda: client.project(run)["state"] == "done", 120, "the resumed run to finish")
    assert log.of("run.resumed", run) and log.of("job.started", run, after=paused)
    assert controller.status()["projects"][0]["done"] == 12


def test_a_priority_change_reorders_dispatch_between_runs(controller, agents, synthetic):
    log = EventLog(controller)
    agents(controller.url, 1)
    with Client(controller.url) as client:
        # jobs longer than QUEUE_ONE_S: the agent holds only the one it runs, so at equal priorities
        # no job of the second run is leased while the first has jobs (fewer in flight goes first)
        first = client.submit(load_project(synthetic(jobs=12, sleep=0.6, name="first")))
        wait_for(lambda: log.of("job.done", first), 60, "the first run to start")
        second = client.submit(load_project(synthetic(jobs=4, sleep=0.2, name="second")))
        wait_for(lambda: client.project(second)["total"] == 4, 60, "the second run accepted")
        _a_second_passes(log, first)
        assert not log.of("job.started", second), "equal priorities: the older run goes first"
        reply = client.set_priority(second, 10)
        assert reply == {"project": second, "priority": 10, "previous": 0}
        changed = log.seq_of("run.priority", second)
        wait_for(lambda: client.project(second)["state"] == "done", 60, "the second run")
        assert client.project(first)["priority"] == 0 and client.project(second)["priority"] == 10
        starts = [e.run for e in log.settled().of("job.started", after=changed)]
        # after the change the second run's jobs go first: none of the first's comes before its last
        assert starts.count(second) == 4
        assert first not in starts[:starts.index(second) + 4], starts
        wait_for(lambda: client.project(first)["state"] == "done", 120, "the first run")


def test_drain_empties_an_agent_and_undrain_gives_it_work_again(controller, agents, synthetic):
    log = EventLog(controller)
    agents(controller.url, 2)
    with Client(controller.url) as client:
        run = client.submit(load_project(synthetic(jobs=40, sleep=0.2, name="drained")))
        wait_for(lambda: all(log.of("job.done", run, agent=a) for a in ("agent-0", "agent-1")), 60,
                 "both agents working")
        reply = client.drain("agent-0")
        assert reply["agent"] == "agent-0" and reply["state"] == "draining"
        drained = log.seq_of("agent.draining", agent="agent-0")

        def agent0() -> dict:
            return next(a for a in client.status()["agents"] if a["id"] == "agent-0")

        wait_for(lambda: agent0()["jobs"] == 0, 60, "agent-0 to finish what it holds")
        assert agent0()["state"] == "draining"
        done = agent0()["done"]
        since = controller.events.last
        wait_for(lambda: len(log.of("job.done", run, after=since, agent="agent-1")) >= 3, 60,
                 "agent-1 going on")
        assert not log.settled().of("job.started", run, after=drained, agent="agent-0")
        assert agent0()["done"] == done
        assert client.undrain("agent-0")["state"] == "active"
        undrained = log.seq_of("agent.undrained", agent="agent-0")
        wait_for(lambda: log.of("job.started", run, after=undrained, agent="agent-0"), 60,
                 "agent-0 working again")
        wait_for(lambda: client.project(run)["state"] == "done", 120, "the run")


def test_pause_priority_and_drain_survive_a_controller_restart(tmp_path, agents, synthetic):
    state = tmp_path / "state"
    first = Controller(restartable_url(), state_dir=state, heartbeat=0.5, liveness=4).start()
    url = first.url
    agents(url, 1)
    try:
        wait_for(lambda: first.registry.by_id("agent-0"), 60, "the agent")
        with Client(url) as client:
            client.drain("agent-0")  # so that nothing runs before the run is paused
            run = client.submit(load_project(synthetic(jobs=6, sleep=0.1, name="kept")))
            client.pause(run)
            client.set_priority(run, 7)
    finally:
        first.stop()
    second = Controller(url, state_dir=state, heartbeat=0.5, liveness=4).start()
    try:
        log = EventLog(second)
        with Client(url) as client:
            wait_for(lambda: client.status()["agents"], 60, "the agent to come back")
            (agent,) = client.status()["agents"]
            assert agent["id"] == "agent-0" and agent["state"] == "draining"
            snap = client.project(run)
            assert snap["paused"] is True and snap["priority"] == 7 and snap["state"] == "running"
            client.undrain("agent-0")
            _a_second_passes(log, run)
            assert not log.settled().of("job.started", run), "a paused run was leased after a restart"
            # says why nothing runs; paused is not stuck: the run never fails for it
            assert client.project(run)["stalled"] == "paused"
            client.resume(run)
            wait_for(lambda: client.project(run)["state"] == "done", 120, "the run after resuming")
            assert client.project(run)["done"] == 6
    finally:
        second.stop(shutdown_agents=True)
