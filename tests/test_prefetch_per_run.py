"""An agent's queue of jobs beyond its slots is sized by the job times of the run it takes from:
after a run of no-op jobs, a run of slow jobs is shared between the agents, not prefetched by the
first one that asks (it had made a 1,000 x 10 ms run take twice its time on two agents).
Real controller, real agent and worker processes."""

from __future__ import annotations

from conftest import wait_for

from farm.client import submit
from farm.controller.server import Controller
from farm.project import load_project


def test_a_slow_run_after_a_fast_one_is_shared_by_the_agents(tmp_path, agents, synthetic):
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state")
    ctl.start()
    try:
        agents(ctl.url, 2)
        wait_for(lambda: len(ctl.registry.agents) == 2, 60, "both agents connected")
        fast = submit(ctl.url, load_project(synthetic(jobs=600, name="fast")))
        assert fast.ok, fast
        timed = [a for a in ctl.registry.agents.values() if a.avg_job_s is not None]
        assert len(timed) == 2 and max(a.avg_job_s for a in timed) < 0.05  # both measured no-op jobs
        slow = submit(ctl.url, load_project(synthetic(jobs=6, sleep=0.3, name="slow")))
        assert slow.ok, slow
        ran = {e.agent for e in ctl.events.buffer if e.run == slow.id and e.type == "job.started"}
        assert len(ran) == 2, f"the slow run's jobs all went to {ran}"
    finally:
        ctl.stop(shutdown_agents=True)
