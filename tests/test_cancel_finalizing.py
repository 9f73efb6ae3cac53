"""`farm cancel` of a run that is finalizing (its jobs are done, its media type's finalize still
writes the final outputs) is refused with the truth and its own code: the run has not finished,
and it ends as done (or failed) when finalize returns; before, it answered "had finished already
(finalizing): nothing to cancel" and exited 0. The library, the CLI (text and --json) and the
HTTP API say the same. Real controller, agent, `farm` processes and HTTP server; the plugin's
finalize waits for a file the test writes, so the moment is the same on every run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from control_helpers import GATED, plugin_project
from http_helpers import web  # noqa: F401 (a fixture)

from farm.client import Client, Summary
from farm.errors import ControlError
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


def farm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=120)


def finalizing(url: str, agents: Any, tmp_path: Path) -> tuple[Path, str, list[Summary], threading.Thread]:
    """A gated run held in its finalize, and its submitter's follow (its summary lands in the list)."""
    project = plugin_project(tmp_path, url, agents, "gated", GATED)
    ended: list[Summary] = []
    with Client(url) as client:
        run = client.submit(load_project(project))

    def follow() -> None:
        with Client(url) as submitter:
            ended.append(submitter.attach(run))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    with Client(url) as client:
        wait_for(lambda: client.project(run)["state"] == "finalizing", 60, "the run finalizing")
    return project, run, ended, thread


def assert_ends_done(project: Path, url: str, run: str, ended: list[Summary],
                     thread: threading.Thread) -> None:
    """Finalize returns: the refused cancel left the run alone, its follower hears it done."""
    (project / "release").write_text("")
    thread.join(60)
    assert ended and ended[0].state == "done" and ended[0].ok, ended
    assert [Path(p).name for p in ended[0].outputs] == ["final.txt"]
    with Client(url) as client:
        assert client.project(run)["state"] == "done"


def test_cancel_of_a_finalizing_run_is_refused_with_the_truth(controller, agents, tmp_path):
    project, run, ended, thread = finalizing(controller.url, agents, tmp_path)
    try:
        with Client(controller.url) as client:
            for ref in (run, "gated"):  # by run id and by name
                with pytest.raises(ControlError) as refused:
                    client.cancel(ref)
                assert refused.value.code == "finalizing", refused.value
                assert f"project {run} is finalizing" in str(refused.value)
                assert "cannot be cancelled" in str(refused.value)

        text = farm("cancel", run, "--controller", controller.url)
        assert text.returncode == 1, text
        assert "finished already" not in text.stderr and "nothing to cancel" not in text.stderr, text.stderr
        assert f"project {run} is finalizing" in text.stderr and "done or failed" in text.stderr, text.stderr
        assert text.stdout == ""  # no summary: nothing was cancelled, nothing has ended

        as_json = farm("cancel", run, "--json", "--controller", controller.url)
        (line,) = as_json.stdout.strip().splitlines()  # one object
        reply = json.loads(line)
        assert as_json.returncode == 1, as_json
        assert reply["code"] == "finalizing" and reply["state"] == "finalizing", reply
        assert set(reply) == {"error", "state", "code"} and "cannot be cancelled" in reply["error"]
        assert not ended  # nobody heard FINISHED: the run has not ended
    finally:
        assert_ends_done(project, controller.url, run, ended, thread)
    again = farm("cancel", run, "--controller", controller.url)  # now it has finished: that is true
    assert again.returncode == 0 and "had finished already (done)" in again.stderr, again


def test_http_cancel_of_a_finalizing_run_is_a_conflict_that_says_so(web, agents, tmp_path):  # noqa: F811
    project, run, ended, thread = finalizing(web.controller.url, agents, tmp_path)
    try:
        refused = web.post(f"/api/v1/projects/{run}/cancel")
        assert refused.status_code == 409, refused.text
        assert f"project {run} is finalizing" in refused.json()["error"], refused.text
        assert web.get(f"/api/v1/projects/{run}").json()["state"] == "finalizing"
    finally:
        assert_ends_done(project, web.controller.url, run, ended, thread)
