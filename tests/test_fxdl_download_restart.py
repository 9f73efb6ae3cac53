"""Getting a remote run's outputs back across a controller restart: a `farm submit` whose
controller stops while it fetches the outputs waits for it and downloads them; `farm download`
serves a run that finished before the controller started; an unknown run is not_found.

Real controller processes (`farm controller`, stopped with SIGTERM and started again at the same
address on the same state), real agents, the real CLI; waits on conditions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import restartable_url, wait_for

from farm.client import Client, submit
from farm.errors import ConnectionLost, ControlError
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]
JOBS = 6
SIZE = 256 * 1024


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class Controllers:
    """`farm controller` processes at one address on one state folder, one at a time."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = restartable_url()
        self.state = tmp_path / "state"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([*FARM, "--log-level", "warning", "controller", "--bind", self.url,
                                      "--state-dir", str(self.state), "--insecure", "--heartbeat", "0.5",
                                      "--liveness", "4"])
        wait_for(self.answers, 60, "the controller answering")

    def answers(self) -> bool:
        with Client(self.url, timeout=1.0) as probe:
            try:
                probe.status()
            except ConnectionLost:
                return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def projects(self) -> list[dict]:
        with Client(self.url, timeout=10) as client:
            return client.status()["projects"]


@pytest.fixture
def controllers(tmp_path):
    started = Controllers(tmp_path)
    yield started
    started.stop()


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
    clean |= {"XDG_CONFIG_HOME": str(tmp_path / "config"), "FARM_CLIENT_TIMEOUT": "2", **env}
    return subprocess.Popen([*FARM, *args], env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def outputs(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.glob("*.bin")}


class Submitter:
    """`farm submit --json --controller URL DIR` of a run that ends while it is stopped (SIGSTOP),
    its controller then stopped: once let go on, it hears of the run's end and downloads from a
    controller that is not there."""

    def __init__(self, tmp_path: Path, controllers: Controllers, agents, project: Path, **env: str) -> None:
        controllers.start()
        self.proc = cli(tmp_path, "submit", "--json", "--controller", controllers.url, str(project), **env)
        self.err: list[str] = []
        reader = threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True)
        reader.start()
        wait_for(controllers.projects, 120, "the run to be accepted")  # no agents yet: it waits
        self.run_id = controllers.projects()[0]["id"]
        self.proc.send_signal(signal.SIGSTOP)
        agents(controllers.url, 1)
        wait_for(lambda: controllers.projects()[0]["state"] == "done", 120, "the run to end")
        controllers.stop()
        self.proc.send_signal(signal.SIGCONT)

    def said(self, words: str) -> bool:
        return any(words in line for line in list(self.err))

    def finish(self) -> tuple[int, str, str]:
        try:
            out = self.proc.communicate(timeout=240)[0]
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate(timeout=60)
        return self.proc.returncode, out, "".join(self.err)


def test_a_submit_whose_controller_restarts_before_the_download_waits_and_downloads(
        tmp_path, controllers, agents, synthetic):
    project = synthetic(jobs=JOBS, output_bytes=SIZE)
    submitter = Submitter(tmp_path, controllers, agents, project)
    # before the fix: "no answer from the controller", exit 1, after 2 s of silence
    wait_for(lambda: submitter.said("waiting up to 10 min") or submitter.proc.poll() is not None, 60,
             "the submitter to wait for the controller")
    controllers.start()
    code, out, err = submitter.finish()
    assert code == 0, (out, err)
    summary = json.loads(out)
    assert summary["state"] == "done" and summary["jobs"]["done"] == JOBS, summary
    assert outputs(project / "output") == {f"job-{i:07d}.bin": SIZE for i in range(JOBS)}


def test_a_submit_that_gives_up_the_download_says_how_to_fetch_the_outputs(
        tmp_path, controllers, agents, synthetic):
    project = synthetic(jobs=JOBS, output_bytes=SIZE)
    submitter = Submitter(tmp_path, controllers, agents, project, FARM_CLIENT_RECONNECT="3")
    code, out, err = submitter.finish()  # the controller does not come back
    assert code == 1, (out, err)
    failed = json.loads(out)
    assert failed["state"] == "failed" and failed["code"] == "unreachable", failed
    assert f"the outputs of {submitter.run_id} were not downloaded" in failed["error"], failed
    assert f"`farm download {submitter.run_id} DIR --controller {controllers.url}`" in failed["error"], failed
    assert not outputs(project / "output")


def test_farm_download_serves_a_run_that_finished_before_the_controller_started(
        tmp_path, controllers, agents, synthetic):
    controllers.start()
    agents(controllers.url, 1)
    project = synthetic(jobs=JOBS, output_bytes=SIZE)
    summary = submit(controllers.url, load_project(project), upload=True)
    assert summary.ok, summary
    controllers.stop()
    controllers.start()  # it has the run only in its journal now
    assert [p["id"] for p in controllers.projects()] == [summary.id]
    fetched = tmp_path / "fetched"
    done = cli(tmp_path, "download", summary.id, str(fetched), "--json", "--controller", controllers.url)
    out, err = done.communicate(timeout=240)
    assert done.returncode == 0, (out, err)
    report = json.loads(out)
    assert report["state"] == "done" and report["downloaded_to"] == str(fetched), report
    assert outputs(fetched) == {f"job-{i:07d}.bin": SIZE for i in range(JOBS)}
    with Client(controllers.url, timeout=10) as client:  # a run it never had: not_found
        with pytest.raises(ControlError) as unknown:
            client.attach("synth-00000000")
    assert unknown.value.code == "not_found", unknown.value
