"""A paused run says "paused" as its stall reason everywhere: `farm status --json` (STATUS), the
remote `farm submit`'s progress line (UPDATE), the client's QUERY and the HTTP API agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import wait_for
from http_helpers import web  # noqa: F401 (a fixture)

from farm.client import Client

FARM = [sys.executable, "-m", "farm"]


def _status(url: str) -> dict:
    done = subprocess.run([*FARM, "status", "--json", "--controller", url], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_paused_run_is_paused_in_status_the_progress_line_the_query_and_the_api(
        web, agents, synthetic, tmp_path):  # noqa: F811 (the fixture)
    url = web.controller.url
    agents(url, 1)
    wait_for(lambda: web.controller.registry.by_id("agent-0"), 60, "the agent")
    log = tmp_path / "submit.err"
    with Client(url) as client, open(log, "w") as err:
        client.drain("agent-0")  # nothing runs: the run stays as it is while we look
        project = synthetic(jobs=4, name="held")
        follower = subprocess.Popen([*FARM, "submit", str(project), "--controller", url],
                                    stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(lambda: client.status()["projects"], 60, "the run")
            (run,) = (p["id"] for p in client.status()["projects"])
            wait_for(lambda: "waiting: no connected agent" in log.read_text(), 60, "the stalled line first")
            assert client.pause(run)["paused"] is True

            # the follower's next UPDATE says so at once (a change of stall reason prints a line)
            wait_for(lambda: "waiting: paused" in log.read_text(), 60, "'waiting: paused' in its progress")
            (shown,) = _status(url)["projects"]
            assert shown["paused"] is True and shown["stalled"] == "paused", shown
            assert client.project(run)["stalled"] == "paused"
            api = web.get(f"/api/v1/projects/{run}").json()
            assert api["paused"] is True and api["stalled"] == "paused", api
            (listed,) = web.get("/api/v1/projects").json()["projects"]
            assert listed["stalled"] == "paused", listed

            # resumed, the reason is the real one again (the agent is draining), everywhere
            client.resume(run)
            (shown,) = _status(url)["projects"]
            assert shown["paused"] is False and shown["stalled"].startswith("no connected agent"), shown
            assert web.get(f"/api/v1/projects/{run}").json()["stalled"] == shown["stalled"]
            client.undrain("agent-0")
            assert follower.wait(120) == 0, log.read_text()
        finally:
            if follower.poll() is None:
                os.kill(follower.pid, signal.SIGTERM)
                follower.wait(30)
