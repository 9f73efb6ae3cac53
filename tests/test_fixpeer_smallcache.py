"""An agent whose cache cannot hold a project is unable for that run, not a reason to fail its jobs.

Real controller on 127.0.0.1 and real `farm agent` processes, one with a cache smaller than the
project's files (``--cache-size``, GiB): its sync fails with CacheFull, it hands the jobs back at
no attempt, and the run's jobs go to the agents that can hold the files; with none, the run says
why it waits and fails naming the cache's limit instead of burning attempts.
"""

from __future__ import annotations

from pathlib import Path

from conftest import wait_for
from test_filesync_peers import WAIT_S, Agents, farm_agents, project_with_assets  # noqa: F401 (fixture)

from farm.client import Client
from farm.project import load_project

SMALL = "0.002"  # GiB: 2 MiB, under the project's 8 MiB of assets


def agent_state(client: Client, agent: str) -> str | None:
    return next((a.get("state") for a in client.status()["agents"] if a["id"] == agent), None)


def test_jobs_leave_an_agent_whose_cache_is_too_small_and_wait_for_one_that_can_hold_them(
        controller, farm_agents: Agents, tmp_path: Path):  # noqa: F811 (the fixture)
    big = farm_agents.start(controller.url)
    small = farm_agents.start(controller.url, "--cache-size", SMALL)
    wait_for(lambda: len(controller.status()["agents"]) == 2, WAIT_S, "2 agents")
    with Client(controller.url, timeout=WAIT_S) as client:
        client.drain(f"agent-{big}")
        run = client.submit(load_project(project_with_assets(tmp_path / "project", jobs=6)))
        # the small cache cannot hold it: that agent is unable for the run, and the run says so
        wait_for(lambda: "cache's limit" in (client.project("peers").get("stalled") or ""), WAIT_S,
                 "the stall reason to name the cache limit")
        stalled = client.project("peers")["stalled"]
        assert f"agent-{small}: blocklisted (unable to run this project: CacheFull" in stalled, stalled
        assert f"agent-{big}: draining" in stalled, stalled
        assert agent_state(client, f"agent-{small}") == "blocklisted"
        jobs = client.jobs("peers")["jobs"]
        assert all(j["state"] == "queued" for j in jobs), jobs  # handed back, none failed
        client.undrain(f"agent-{big}")  # one that can hold the files: the jobs go there
        summary = client.follow(run)
    assert summary.ok and summary.done == 6 and summary.failed == 0, summary
    assert "cache's limit" in farm_agents.log(small)


def test_a_run_only_a_too_small_cache_can_take_fails_naming_the_limit_without_spending_attempts(
        controller, farm_agents: Agents, tmp_path: Path):  # noqa: F811 (the fixture)
    small = farm_agents.start(controller.url, "--cache-size", SMALL)
    wait_for(lambda: len(controller.status()["agents"]) == 1, WAIT_S, "the agent")
    with Client(controller.url, timeout=WAIT_S) as client:
        project = load_project(project_with_assets(tmp_path / "project", jobs=6))
        summary = client.follow(client.submit(project))
        jobs = client.jobs("peers")["jobs"]
    assert not summary.ok
    assert "cache's limit" in (summary.error or "") and f"agent-{small}" in (summary.error or ""), summary
    assert all(j["attempts"] <= 1 for j in jobs), jobs  # not 12 failed attempts on the same node


def test_a_full_disk_is_the_node_s_want_too_and_an_unable_agent_stays_off_the_run():
    import errno

    from farm.agent.sync import lacks_room
    from farm.controller.policy import NODE_FAULT, Conduct
    from farm.filesync.errors import SyncError
    from farm.filesync.store import CacheFull

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise SyncError("cannot write a block") from exc
    except SyncError as wrapped:
        assert lacks_room(wrapped)
    assert lacks_room(CacheFull("over the limit"))
    assert not lacks_room(SyncError("no tree named 'x'")) and not lacks_room(OSError(errno.EACCES, "denied"))
    conduct = Conduct()
    assert conduct.handed_back("j1", "a4", "not started: worker restarting") is None  # an honest hand-back
    why = conduct.handed_back("j2", "a4", f"not started: {NODE_FAULT}OSError: No space left on device")
    assert why and "No space left" in why and "a4" in conduct.blocklist
    assert conduct.handed_back("j3", "a4", f"not started: {NODE_FAULT}again") is None  # blocked once
    conduct.lift(["a4"])
    assert "a4" in conduct.blocklist and not conduct.liftable("a4")
