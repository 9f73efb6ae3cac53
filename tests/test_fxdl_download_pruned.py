"""`farm download` of a run the controller pruned from memory (it keeps the newest finished runs
there, `KEEP_FINISHED_RUNS`) answers from the journal, as for a run that finished before it started.

A real `farm controller` process whose bound is lowered to one run (the module attribute, set in
the process before the command line starts), a real agent, real uploads and the real CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import wait_for
from test_fxdl_download_restart import SIZE, Controllers, cli, outputs

from farm.client import Client, submit
from farm.project import load_project

# `farm controller`, keeping one finished run in memory
PRUNING = ("import sys, farm.controller.clients as clients; clients.KEEP_FINISHED_RUNS = 1; "
           "from farm.cli import main; main()")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class Pruning(Controllers):
    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PRUNING, "--log-level", "warning", "controller",
                                      "--bind", self.url, "--state-dir", str(self.state), "--insecure"])
        wait_for(self.answers, 60, "the controller answering")  # it has read its journal's history now


@pytest.fixture
def controller(tmp_path):
    started = Pruning(tmp_path)
    started.start()
    yield started
    started.stop()


def test_farm_download_of_a_run_pruned_from_memory(tmp_path, controller, agents, synthetic):
    agents(controller.url, 1)
    first = submit(controller.url, load_project(synthetic(jobs=2, output_bytes=SIZE, name="first")),
                   upload=True)
    second = submit(controller.url, load_project(synthetic(jobs=3, output_bytes=SIZE, name="second")),
                    upload=True)
    assert first.ok and second.ok, (first, second)
    with Client(controller.url, timeout=10) as client:
        assert [p["id"] for p in client.status()["projects"]] == [second.id]  # the first is pruned
    fetched = tmp_path / "fetched"
    done = cli(tmp_path, "download", first.id, str(fetched), "--json", "--controller", controller.url)
    out, err = done.communicate(timeout=240)
    # before the fix: "no project ... on this controller" (not_found) at FOLLOW
    assert done.returncode == 0, (out, err)
    report = json.loads(out)
    assert report["id"] == first.id and report["state"] == "done", report
    assert outputs(fetched) == {f"job-{i:07d}.bin": SIZE for i in range(2)}
