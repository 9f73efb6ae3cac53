"""A remote submitter's run that ends (cancelled, or finished) has its output folder published for
download off the controller's loop.

Publishing lists and hashes every output file: a zoom 0-10 map's 127,000 tiles held the loop
15-25 s, so `farm cancel` said "unreachable", agents missed heartbeats and reconnected, and the
submitter thought the controller was restarting. Here the real `publish_outputs` is gated by an
event (agents, submitter and canceller are real processes): while it is held, the controller must
answer a STATUS, and the canceller must not have had its answer yet (it waits for the download).
"""

from __future__ import annotations

import subprocess
import sys
import threading

from conftest import wait_for

from farm.client import Client

FARM = [sys.executable, "-m", "farm"]


class Gate:
    """Wraps the controller's `publish_outputs`: notes the thread it runs in, waits for `release`."""

    def __init__(self, controller, monkeypatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []
        real = controller.assets.publish_outputs

        def gated(tree, folder):
            self.threads.append(threading.current_thread().name)
            self.entered.set()
            self.release.wait(120)  # on the loop, this held every reply and heartbeat
            return real(tree, folder)

        monkeypatch.setattr(controller.assets, "publish_outputs", gated)


def _farm(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*FARM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _answered_while_held(controller, gate: Gate, run_id: str, state: str,
                         waiter: subprocess.Popen[str]) -> None:
    """While the outputs are being published, the controller answers STATUS and ``waiter`` (who
    downloads them) is not answered yet; once they are, it is, and they were published off the loop."""
    try:
        assert gate.entered.wait(120), "the outputs were never published"
        with Client(controller.url, timeout=30) as probe:  # silence for 30 s: the loop is held
            status = probe.status()
        seen = next(p for p in status["projects"] if p["id"] == run_id)
        assert seen["state"] == state, seen
        assert waiter.poll() is None, "answered before the outputs were served"
    finally:
        gate.release.set()
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, (out, err)
    assert "farm-controller" not in gate.threads, gate.threads


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:  # a submit that ended by itself (cancelled) still has its pipes to close
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_cancelled_remote_run_is_published_off_the_loop(controller, agents, synthetic, tmp_path,
                                                          monkeypatch):
    gate = Gate(controller, monkeypatch)
    agents(controller.url, 1)
    project = synthetic(jobs=100_000, sleep=0.001, output_bytes=64, name="big")
    procs = [_farm("submit", "--controller", controller.url, str(project))]
    try:
        run = wait_for(lambda: next((r for r in list(controller.runs.values()) if r.done >= 20), None), 120,
                       "jobs done")
        got = tmp_path / "got"
        procs.append(_farm("cancel", "big", "--controller", controller.url, "--download", str(got)))
        _answered_while_held(controller, gate, run.id, "cancelled", procs[1])
        assert len(list(got.glob("*.bin"))) >= 20  # what was collated came down
    finally:
        gate.release.set()
        _stop(procs)


def test_a_finished_remote_run_is_published_off_the_loop(controller, agents, synthetic, monkeypatch):
    gate = Gate(controller, monkeypatch)
    agents(controller.url, 1)
    project = synthetic(jobs=5, output_bytes=64, name="small")
    procs = [_farm("submit", "--controller", controller.url, str(project))]
    try:
        run = wait_for(lambda: next(iter(list(controller.runs.values())), None), 120, "the run")
        _answered_while_held(controller, gate, run.id, "done", procs[0])
        assert len(list((project / "output").glob("*.bin"))) == 5
    finally:
        gate.release.set()
        _stop(procs)
