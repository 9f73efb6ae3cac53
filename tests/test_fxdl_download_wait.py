"""`farm download` and `farm cancel --download` started while their controller is down wait for it
(`$FARM_CLIENT_RECONNECT`), saying so, as a download in progress waits out a restart; giving up
says how to fetch the outputs later.

Real controller processes (`farm controller`, stopped with SIGTERM and started again at the same
address on the same state), a real agent, the real CLI; waits on conditions.
"""

from __future__ import annotations

import json
import threading

import pytest
from conftest import wait_for
from test_fxdl_download_restart import JOBS, SIZE, Controllers, cli, outputs

from farm.client import submit
from farm.project import load_project

WAITING = "the controller may be restarting: waiting up to 10 min for it"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def controllers(tmp_path):
    started = Controllers(tmp_path)
    yield started
    started.stop()


def _finished_run_then_down(controllers: Controllers, agents, synthetic) -> str:
    """A remote run that finished, its controller then stopped; its id."""
    controllers.start()
    agents(controllers.url, 1)
    summary = submit(controllers.url, load_project(synthetic(jobs=JOBS, output_bytes=SIZE)), upload=True)
    assert summary.ok, summary
    controllers.stop()
    return summary.id


def _started_before_the_controller(tmp_path, controllers: Controllers, *args: str,
                                   **env: str) -> tuple[int, dict, str]:
    """Run the CLI while the controller is down; start the controller once the CLI says it waits."""
    proc = cli(tmp_path, *args, "--json", "--controller", controllers.url, **env)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        # before the fix: "nothing listens at ...", exit 1, at the first lookup
        wait_for(lambda: any(WAITING in line for line in list(err)) or proc.poll() is not None, 60,
                 "the command to wait for the controller")
        controllers.start()
        out = proc.stdout.read()
        proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)
    reader.join(10)
    proc.stdout.close()
    proc.stderr.close()
    return proc.returncode, json.loads(out), "".join(err)


def test_farm_download_started_while_the_controller_is_down_waits_for_it(
        tmp_path, controllers, agents, synthetic):
    run_id = _finished_run_then_down(controllers, agents, synthetic)
    fetched = tmp_path / "fetched"
    code, report, err = _started_before_the_controller(tmp_path, controllers, "download", run_id,
                                                       str(fetched))
    assert code == 0, (report, err)
    assert WAITING in err and "the controller is back" in err, err
    assert report["state"] == "done" and report["downloaded_to"] == str(fetched), report
    assert outputs(fetched) == {f"job-{i:07d}.bin": SIZE for i in range(JOBS)}


def test_farm_cancel_download_started_while_the_controller_is_down_waits_for_it(
        tmp_path, controllers, agents, synthetic):
    run_id = _finished_run_then_down(controllers, agents, synthetic)
    fetched = tmp_path / "fetched"
    code, report, err = _started_before_the_controller(tmp_path, controllers, "cancel", run_id,
                                                       "--download", str(fetched))
    assert code == 0, (report, err)
    assert WAITING in err, err
    assert report["already"] and report["state"] == "done", report  # it had finished: nothing cancelled
    assert outputs(fetched) == {f"job-{i:07d}.bin": SIZE for i in range(JOBS)}


def test_farm_download_that_gives_up_waiting_says_how_to_fetch_later(tmp_path, controllers):
    done = cli(tmp_path, "download", "synth-00000001", str(tmp_path / "fetched"), "--json",
               "--controller", controllers.url, FARM_CLIENT_RECONNECT="2")
    out, err = done.communicate(timeout=120)
    assert done.returncode == 1, (out, err)
    failed = json.loads(out)
    assert failed["code"] == "unreachable" and "did not come back within 2s" in failed["error"], failed
    assert f"`farm download synth-00000001 DIR --controller {controllers.url}`" in failed["error"], failed
    assert err.count("the controller may be restarting: waiting up to") == 1 and "restarting?" not in err, err
