"""A project file edited after its run was submitted (and published) cannot be fetched by any agent:
the file server no longer has what the run's manifest names. The jobs the agent held fail once, for
good, saying which file was edited and what to do, and the run stops there with that reason: it burned
every job's attempts before, in words ("publish the tree again") a user could not act on, and then
failed every other job of the run one by one. Real controller, real agent process."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import write_project

from farm.client import submit
from farm.controller.server import Controller
from farm.embedded import start_local_agents, stop_agents
from farm.project import load_project


@pytest.mark.parametrize("local_assets", [False, True], ids=["fetched", "local"])
def test_a_source_edited_after_submit_stops_the_run_once_naming_it(tmp_path: Path, local_assets: bool):
    jobs = 600  # more than one agent holds (a slot and 256 prefetched): the rest are never leased
    project = write_project(tmp_path / "proj", "synthetic", f"jobs = {jobs}\noutput_bytes = 8\n")
    (project / "data.txt").write_text("as submitted\n")
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state").start()
    procs = []
    try:
        accepted = threading.Event()
        result: list = []

        def on_update(update: dict) -> None:
            accepted.set()

        def follow() -> None:
            result.append(submit(ctl.url, load_project(project), on_update=on_update))

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert accepted.wait(120), "the run was never accepted"  # published, no agent to run it yet
        (project / "data.txt").write_text("edited after the submit, a different size\n")
        procs = start_local_agents(ctl.url, 1, local_assets=local_assets)  # local: files used in place
        follower.join(240)
        assert result, "the run did not end"
    finally:
        ctl.stop(shutdown_agents=True)
        stop_agents(procs)
    summary = result[0]
    said = ("data.txt changed since it was published: edited after its run was submitted? "
            "Submit the project again")
    assert summary.state == "failed" and summary.done == 0, summary
    assert said in (summary.error or ""), summary.error  # the run's reason, said once
    assert 0 < summary.failed < jobs, summary  # what the agent held, not every job of the run
    for failure in summary.failures:
        assert said in failure["error"], failure
        assert failure["attempts"] == 1, failure  # for good at once: no attempt can fetch it
