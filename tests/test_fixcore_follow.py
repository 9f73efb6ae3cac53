"""A remote `farm submit` waits out a controller restart and still downloads the outputs; when it
gives up it says how to fetch them later, and `farm download` does that. A remote run that
collated nothing names no folder on the controller's disk."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import restartable_url, wait_for

from farm.controller.server import Controller

FARM = [sys.executable, "-m", "farm"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def no_submitter_left():
    """A test that fails half-way leaves no submitter running (nor its pipes open)."""
    yield
    while STARTED:
        STARTED.pop().stop()


class Submitter:
    """`farm submit --controller URL DIR` in the background, its stderr read as it comes."""

    def __init__(self, tmp_path: Path, *args: str, **env: str) -> None:
        clean = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
        clean |= {"XDG_CONFIG_HOME": str(tmp_path / "config"), "FARM_CLIENT_TIMEOUT": "2", **env}
        self.proc = subprocess.Popen(
            [*FARM, *args], env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        STARTED.append(self)
        self.err: list[str] = []
        self.out: list[str] = []
        self.readers = [threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True),
                        threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True)]
        for reader in self.readers:
            reader.start()

    def said(self, words: str) -> bool:
        return any(words in line for line in list(self.err))

    def finish(self, timeout: float = 240) -> tuple[int, str, str]:
        self.proc.wait(timeout)
        for reader in self.readers:  # each reads its pipe to the end (communicate() would race them)
            reader.join(30)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, "".join(self.out), "".join(self.err)


    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(60)


STARTED: list[Submitter] = []


def start(url: str, state: Path) -> Controller:
    return Controller(url, state_dir=state, heartbeat=0.5, liveness=4).start()


def test_a_remote_submit_waits_out_a_controller_restart_and_downloads(tmp_path, agents, synthetic):
    first = start(restartable_url(), tmp_path / "state")
    url = first.url
    second = None
    try:
        agents(url, 1)  # an agent reconnects by itself after the restart
        project = synthetic(jobs=24, sleep=0.1, output_bytes=8)
        submitter = Submitter(tmp_path, "submit", "--controller", url, str(project))
        wait_for(lambda: first.stats["collated"] >= 4, 120, "some jobs done")
        first.stop()
        wait_for(lambda: submitter.said("waiting up to 10 min"), 60, "the submitter to say it waits")
        assert submitter.proc.poll() is None  # still following
        second = start(url, tmp_path / "state")
        code, out, err = submitter.finish()
        assert code == 0, err
        assert "24/24 jobs done" in out and "the controller is back" in err, (out, err)
        assert len(list((project / "output").glob("*"))) == 24  # downloaded here, not left there
        assert str(tmp_path / "state") not in out
    finally:
        first.stop()
        if second is not None:
            second.stop(shutdown_agents=True)


def test_a_submit_that_gives_up_says_how_to_fetch_later_and_farm_download_does(tmp_path, agents, synthetic):
    first = start(restartable_url(), tmp_path / "state")
    url = first.url
    second = None
    try:
        project = synthetic(jobs=6, sleep=0.05, output_bytes=8)
        submitter = Submitter(
            tmp_path, "submit", "--controller", url, str(project), FARM_CLIENT_RECONNECT="3"
        )
        wait_for(lambda: first.runs, 120, "the run to be accepted")  # no agents: it waits
        run_id = next(iter(first.runs))
        first.stop()
        code, _, err = submitter.finish()
        assert code == 1
        assert "did not come back within 3s" in err, err
        assert f"farm download {run_id} DIR --controller {url}" in err, err
        second = start(url, tmp_path / "state")
        agents(url, 1)
        fetched = Submitter(tmp_path, "download", run_id, str(tmp_path / "fetched"), "--controller", url)
        code, out, err = fetched.finish()
        assert code == 0, err
        assert "6/6 jobs done" in out and len(list((tmp_path / "fetched").glob("*"))) == 6, (out, err)
        # by name (its newest run), which has ended: at once
        again = Submitter(tmp_path, "download", "synth", str(tmp_path / "again"), "--controller", url)
        code, out, err = again.finish()
        assert code == 0 and len(list((tmp_path / "again").glob("*"))) == 6, (out, err)
    finally:
        first.stop()
        if second is not None:
            second.stop(shutdown_agents=True)


def test_a_remote_run_that_collated_nothing_names_no_folder_of_the_controller(
    tmp_path, controller, synthetic
):
    from farm.client import Client

    project = synthetic(jobs=2)
    submitter = Submitter(tmp_path, "submit", "--controller", controller.url, str(project))
    wait_for(lambda: controller.runs, 120, "the run to be accepted")  # no agents: nothing is made
    with Client(controller.url) as client:
        client.cancel(next(iter(controller.runs)))
    code, out, err = submitter.finish()
    assert code == 1, err
    assert "no outputs: the controller collated none" in out and "outputs in" not in out, out
    assert str(controller.state_dir) not in out
