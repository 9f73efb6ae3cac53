"""A controller killed and restarted mid-run: the follower is back at once, and the run's
elapsed time is its whole wall time (from its submit, the controller's downtime included).

Real controller processes (killed with SIGKILL), real agents, real sockets; waits on conditions.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from conftest import wait_for

from farm.client import REFOLLOW_S, Client
from farm.errors import ConnectionLost
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


def answers(url: str) -> bool:
    """The controller at `url` answers a STATUS within a second."""
    with Client(url, timeout=1.0) as probe:
        try:
            probe.status()
        except ConnectionLost:
            return False
    return True


def test_follower_is_back_as_soon_as_the_restarted_controller_answers_and_elapsed_spans_the_restart(
        tmp_path, agents, synthetic):
    project = synthetic(jobs=400, sleep=0.02, output_bytes=16)
    url = f"ipc://{tmp_path}/controller.sock"
    state = tmp_path / "state"

    def start_controller() -> subprocess.Popen[bytes]:
        return subprocess.Popen([*FARM, "--log-level", "warning", "controller", "--bind", url,
                                 "--state-dir", str(state), "--heartbeat", "0.5", "--liveness", "4"])

    ctl = start_controller()
    agents(url, 2)
    updates: list[tuple[float, dict]] = []
    result: dict = {}
    # silence counts as a lost controller only after 60 s: before the fix the follower waited that long
    client = Client(url, timeout=60)
    before_submit = time.time()
    run_id = client.submit(load_project(project))
    submitted = time.time()  # the controller's submit time lies between the two

    def follow() -> None:
        try:
            result["summary"] = client.follow(run_id, lambda body: updates.append((time.monotonic(), body)),
                                              reconnect_s=120)
        except BaseException as exc:  # reported by the test
            result["error"] = exc
        result["at"], result["wall"] = time.monotonic(), time.time()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        wait_for(lambda: updates and updates[-1][1].get("done", 0) >= 300, 120, "300 jobs done")
        ctl.kill()
        ctl.wait()
        heard_before = len(updates)
        killed_wall = time.time()
        ctl = start_controller()
        wait_for(lambda: answers(url), 60, "the restarted controller answering")
        back = time.monotonic()
        wait_for(lambda: len(updates) > heard_before or "at" in result, 60, "the follower hearing again")
        heard = updates[heard_before][0] if len(updates) > heard_before else result["at"]
        thread.join(120)
    finally:
        ctl.terminate()
        ctl.wait()
        client.close()
    assert "error" not in result, result
    summary = result["summary"]
    assert summary.ok and summary.done == 400, summary
    # the follower asks again after each REFOLLOW_S of silence: never the 60 s silence limit
    assert heard - back < 3 * REFOLLOW_S + 2, f"heard {heard - back:.1f}s after the controller was back"
    # elapsed: from the submit to the end, across the restart (the downtime counts); before the
    # fix it counted from the restart only, 3 s (300 jobs on 2 agents) and more short
    whole = result["wall"] - submitted
    assert whole - 1.0 <= summary.elapsed_s <= result["wall"] - before_submit, (summary.elapsed_s, whole)
    assert summary.elapsed_s > result["wall"] - killed_wall, summary.elapsed_s
