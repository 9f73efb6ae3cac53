"""Live control's effect on the scheduler's decisions, without sockets (farm.controller.scheduler)."""

from __future__ import annotations

from test_seams_scheduler import agent, given
from test_seams_scheduler import farm as sched  # noqa: F401 (the fixture: a scheduler without sockets)

from farm.controller.policy import STUCK_GRACE_S


def test_a_paused_run_gets_nothing_and_is_not_stalled(sched):  # noqa: F811
    paused, other = sched.make(4, priority=5), sched.make(4)
    paused.paused = True
    sched.registry.add(agent("a", slots=2))
    assert [j.split("/")[0] for j in given(sched.dispatch(0.0))["a"]] == [other.id, other.id]
    assert not paused.leases and sched.stalled(paused) is None
    paused.paused = False
    sched.registry.add(agent("b", slots=2))
    assert [j.split("/")[0] for j in given(sched.dispatch(0.0))["b"]] == [paused.id, paused.id]


def test_a_draining_agent_gets_nothing_and_its_runs_wait_rather_than_fail(sched):  # noqa: F811
    run = sched.make(3)
    sched.registry.add(agent("a"))
    sched.registry.draining.add("a")
    assert sched.dispatch(0.0) == []
    assert "a: draining" in sched.stalled(run)
    for now in (0.0, STUCK_GRACE_S * 3):  # a closed farm whose one agent is here and draining
        sched.abort_stuck(now, [None])
    assert run.error is None and run.active
    sched.registry.draining.discard("a")
    assert len(given(sched.dispatch(1.0))["a"]) == 1


def test_a_failed_job_is_not_kept_for_a_draining_agent(sched):  # noqa: F811
    run = sched.make(1)
    a, b = agent("a"), agent("b")
    sched.registry.add(a)
    sched.registry.add(b)
    sched.registry.draining.add("b")
    (lease,) = given(sched.dispatch(0.0))["a"]
    held = sched.settle(a, next(iter(a.held)))
    run.failed(held, "boom", "")
    # it would wait for an agent that has not had it; a draining one does not count
    assert given(sched.dispatch(0.0)) == {"a": [lease]}


def test_agent_states_for_people(sched):  # noqa: F811
    run = sched.make(2)
    broken, drained, blocked, fine = agent("x", broken="no python"), agent("d"), agent("k"), agent("f")
    for node in (broken, drained, blocked, fine):
        sched.registry.add(node)
    sched.registry.draining.update({"d", "x"})
    run.conduct.blocklist["k"] = "failed 3 jobs"
    assert [sched.agent_state(n) for n in (broken, drained, blocked, fine)] == \
        ["broken", "draining", "blocklisted", "active"]
    run.state = "done"  # a blocklist counts only in running runs
    assert sched.agent_state(blocked) == "active"


def test_retry_requeues_failed_jobs_with_fresh_attempts(sched):  # noqa: F811
    run = sched.make(2, extra="[jobs]\nmax_attempts = 1\n")
    node = agent("a", slots=2)
    sched.registry.add(node)
    sched.dispatch(0.0)
    for lease_id in list(node.held):
        run.failed(sched.settle(node, lease_id), "boom", "trace")
    assert sorted(run.failures) == ["job-0000000", "job-0000001"]
    assert run.retry(["job-0000001"]) == ["job-0000001"]
    assert list(run.failures) == ["job-0000000"] and run.attempts["job-0000001"] == 0
    assert given(sched.dispatch(0.0)) == {"a": [f"{run.id}/job-0000001"]}
    assert [a["attempt"] for a in run.logs.attempts("job-0000001")] == [1]  # the failed one; this runs now
