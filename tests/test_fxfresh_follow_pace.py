"""A follower says at once that its controller stopped answering, and paces are those of the work.

- A remote `farm submit` whose controller was stopped mid-run said nothing for `$FARM_CLIENT_TIMEOUT`
  (15 s) and its line kept its last rate; now it says within `REFOLLOW_S` of silence that the
  controller does not answer and how long it waits, and its line shows no rate meanwhile.
- After a pause, the line read "0.1 items/s · ETA 05:00" with jobs done at 2 a second: the window
  held the paused samples. Now it starts again where the run could not move; and the
  controller's own rate (`farm status`, the dashboard) leaves out the time paused with nothing
  running.

Real controllers, real agent processes, a real `farm submit` process; waits on conditions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import wait_for

from farm.cli.progress import CONTROLLER_SILENT, Position, ProgressBar, progress_text
from farm.cli.status import status_text
from farm.client import Client
from farm.controller.server import Controller
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_a_submit_says_at_once_that_its_controller_stopped_and_shows_no_rate(tmp_path, agents, synthetic):
    controller = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5,
                            liveness=4).start()
    url = controller.url
    env = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
    # silence counts as a lost controller only after 10 min: before, the wait was said only then
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "config"), "FARM_CLIENT_TIMEOUT": "600"}
    err: list[str] = []
    submitter = None
    try:
        agents(url, 1)
        project = synthetic(jobs=400, sleep=0.05)
        submitter = subprocess.Popen([*FARM, "submit", "--controller", url, str(project)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: err.extend(submitter.stderr), daemon=True)
        reader.start()
        wait_for(lambda: controller.stats["collated"] >= 10, 120, "some jobs done")
        controller.stop()
        said = wait_for(lambda: [line for line in list(err) if "waiting up to 10 min" in line], 60,
                        "the submitter to say it waits for the controller")
        assert "no answer from the controller at " in said[0], said
        shown = wait_for(lambda: [line for line in list(err) if CONTROLLER_SILENT in line], 60,
                         "the progress line to say the controller does not answer")
        assert "-- items/s · ETA --:--" in shown[-1], shown  # no pace from before the silence
        assert submitter.poll() is None, "".join(err)  # still waiting
    finally:
        controller.stop()
        if submitter is not None:
            submitter.kill()
            submitter.wait(60)
            submitter.stderr.close()


def test_after_a_pause_the_pace_is_that_of_the_work(tmp_path, agents, synthetic):
    controller = Controller(f"ipc://{tmp_path}/ctl.sock", state_dir=tmp_path / "state", heartbeat=0.5,
                            liveness=4).start()
    url = controller.url
    heard: list[tuple[float, dict]] = []
    ended: list = []
    following = threading.Thread()
    follower = Client(url, timeout=120)
    try:
        agents(url, 2)
        wait_for(lambda: len(controller.registry) == 2, 120, "both agents")
        project = synthetic(jobs=2000, sleep=0.02)
        run = follower.submit(load_project(project))
        following = threading.Thread(
            target=lambda: ended.append(follower.follow(run, lambda s: heard.append((time.monotonic(), s)))),
            daemon=True)
        following.start()
        with Client(url, timeout=60) as client:
            wait_for(lambda: client.project(run)["done"] >= 150, 120, "some jobs done")
            client.pause(run)
            idle = wait_for(lambda: (lambda s: s if s["running"] == s["collating"] == 0 else None)(
                client.project(run)), 120, "the jobs held at the pause done")
            # paused, nothing running, for 4 times the run's time until then (and 30 updates at least)
            wait_for(lambda: client.project(run)["elapsed_s"] >= 4 * idle["elapsed_s"]
                     and sum(1 for _, s in heard if s["paused"]) >= 30, 300, "a long pause")
            paused, report = client.project(run), client.status()
            client.resume(run)
            resumed = len(heard)
            wait_for(lambda: sum(1 for _, s in heard[resumed:] if s["done"] > paused["done"]) >= 5, 120,
                     "5 updates with jobs done after the resume")
            client.cancel(run)
        following.join(120)
        assert ended and ended[0].state == "cancelled", ended
    finally:
        controller.stop(shutdown_agents=True)
        if not following.is_alive():  # a socket is closed by the thread that uses it, or once it is done
            follower.close()

    # the controller: its pace over the time it could move, not over the pause (before: work / elapsed)
    work = paused["units"]["done"] + paused["units"]["partial"]
    assert paused["units"]["rate"] >= 2 * work / paused["elapsed_s"], paused
    line = next(li for li in status_text(report).splitlines() if run in li)
    assert f"{paused['units']['rate']:,.1f} items/s" in line, line

    # the submitter's line: after the resume, the pace since it (before: a window half over the pause)
    bar = ProgressBar(enabled=False)
    last_paused = max(i for i, (_, s) in enumerate(heard) if s["paused"])
    lines = [bar.line(snap, now) for now, snap in heard]
    t0, snap0 = heard[last_paused]
    after = [i for i, (now, snap) in enumerate(heard)
             if i > last_paused and now - t0 >= 0.3 and snap["units"]["done"] > snap0["units"]["done"]]
    assert after, heard[last_paused:]
    first = after[0]
    now, snap = heard[first]
    expected = progress_text(snap, (Position(snap).value - Position(snap0).value) / (now - t0))
    assert lines[first] == expected, (lines[first], expected)
