"""A remote run that finished before the controller restarted has its outputs published again,
for `farm download` and `farm cancel NAME --download`, off the controller's loop.

That publish lists and hashes the whole output folder (a zoom-10 map: 1.4 million tiles); on
the loop it held heartbeats and every client's answer. Here the restarted controller's real
`publish_outputs` is held by a gate (the controller, agent, submitter, downloader and canceller
are real): while it is held, STATUS is answered and neither client has its answer; the folder
is published once for both, and both get every file once it is released.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import restartable_url, wait_for
from test_fxcancel_publish import Gate

from farm.client import Client
from farm.controller.server import Controller

FARM = [sys.executable, "-m", "farm"]


def _controller(url: str, state) -> Controller:
    ctl = Controller(url, state_dir=state, heartbeat=0.5, liveness=4)
    ctl.start()
    return ctl


def test_a_journaled_run_is_published_again_off_the_loop(agents, synthetic, tmp_path, monkeypatch):
    url, state = restartable_url(), tmp_path / "controller-state"
    first = _controller(url, state)
    try:
        agents(url, 1)
        project = synthetic(jobs=5, output_bytes=64, name="before")
        done = subprocess.run([*FARM, "submit", "--controller", url, str(project)], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (done.stdout, done.stderr)
        run_id = next(iter(first.runs))
    finally:
        first.stop(shutdown_agents=True)

    ctl = _controller(url, state)
    procs = []
    try:
        gate = Gate(ctl, monkeypatch)
        procs.append(subprocess.Popen([*FARM, "download", run_id, str(tmp_path / "got"), "--controller", url],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        assert gate.entered.wait(120), "the outputs were never published again"
        procs.append(subprocess.Popen([*FARM, "cancel", "before", "--controller", url,
                                       "--download", str(tmp_path / "also")],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        with Client(url, timeout=30) as probe:  # silence for 30 s: the loop is held
            status = probe.status()
        assert any(p["id"] == run_id and p["state"] == "done" for p in status["projects"]), status
        wait_for(lambda: len(ctl._publisher or ()) == 1 and _asked_twice(ctl), 120, "the cancel to wait")
        assert all(proc.poll() is None for proc in procs), "answered before the outputs were served"
        gate.release.set()
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, (out, err)
        assert gate.threads and "farm-controller" not in gate.threads, gate.threads
        assert len(gate.threads) == 1, gate.threads  # published once for both, and the download's refollows
        for folder in ("got", "also"):
            assert len(list((tmp_path / folder).glob("*.bin"))) == 5, folder
    finally:
        gate.release.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        ctl.stop(shutdown_agents=True)


def _asked_twice(ctl: Controller) -> bool:
    """The publish under way has the download's and the cancel's answers waiting on it."""
    pending = list(ctl._publisher._pending) if ctl._publisher is not None else []
    return bool(pending) and len(pending[0][2]) >= 2
