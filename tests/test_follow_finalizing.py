"""A client that follows a run while it finalizes (a submitter back after a controller restart,
asking again) hears FINISHED when finalize returns, with the run's end, not at once with state
"finalizing" (which `farm submit` took for a failed run). Real controller, agent and client; the
plugin's finalize waits for a file the test writes, so the moment is the same on every run."""

from __future__ import annotations

import threading

from conftest import wait_for
from control_helpers import GATED, plugin_project

from farm.client import Client
from farm.project import load_project


def test_a_follower_of_a_finalizing_run_hears_its_end_not_finalizing(controller, agents, tmp_path):
    project = plugin_project(tmp_path, controller.url, agents, "gated", GATED)
    with Client(controller.url) as submitter:
        run = submitter.submit(load_project(project))
        wait_for(lambda: submitter.project(run)["state"] == "finalizing", 60, "the run finalizing")
    updates: list[dict] = []
    ended: list = []
    with Client(controller.url) as follower:
        thread = threading.Thread(target=lambda: ended.append(follower.attach(run, updates.append)),
                                  daemon=True)
        thread.start()
        try:
            wait_for(lambda: updates or ended, 60, "an answer to FOLLOW")
            assert not ended, ended  # before: FINISHED at once, its state "finalizing"
        finally:
            (project / "release").write_text("")  # finalize returns
        thread.join(60)
    assert ended and ended[0].state == "done" and ended[0].ok, ended
