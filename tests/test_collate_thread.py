"""Collates run in a thread of the controller (`farm.controller.collator`), not on its loop.

The controller's `synthetic` collate is wrapped in this process (agents are real processes
and render as ever): it blocks on an event, or raises, for the keys a test names.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from agent_trust_helpers import AgentTmp
from conftest import Background, wait_for
from farm_synthetic import Synthetic, job_key, payload
from restart_helpers import follow_after_restart

from farm.client import Client
from farm.controller.run import ProjectRun
from farm.project import load_project


class Gate:
    """Wraps Synthetic.collate: blocks on `release` for `blocking` keys, raises for `failing` ones."""

    def __init__(self, blocking=(), failing=(), fail_times: int = 10**9, block_first: bool = False) -> None:
        self.blocking, self.failing, self.fail_times = set(blocking), set(failing), fail_times
        self.block_first = block_first  # block the first collate, whichever job's
        self.release = threading.Event()
        self.blocked = threading.Event()  # a collate is waiting on `release`
        self.returned: list[str] = []  # keys whose collate returned, in order
        self.failed: list[str] = []
        self.threads: set[str] = set()  # where the collates ran
        self.finalize_saw: list[int] | None = None  # len(returned) when finalize began

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Gate:
        collate, finalize = Synthetic.collate, Synthetic.finalize

        def gated(media, job, result, outputs, ctx):
            self.threads.add(threading.current_thread().name)
            if job.key in self.blocking or (self.block_first and not self.blocked.is_set()):
                self.blocked.set()
                assert self.release.wait(120), "never released"
            if job.key in self.failing and self.failed.count(job.key) < self.fail_times:
                self.failed.append(job.key)
                raise RuntimeError(f"collate refused {job.key}")
            collate(media, job, result, outputs, ctx)
            self.returned.append(job.key)

        def finalizing(media, ctx):
            self.finalize_saw = [len(self.returned)]
            return finalize(media, ctx)

        monkeypatch.setattr(Synthetic, "collate", gated)
        monkeypatch.setattr(Synthetic, "finalize", finalizing)
        return self


def describe(controller, run) -> str:
    return (f"collating {len(run.collating)}, leases {len(run.leases)}, ready {len(run.ready)}, "
            f"done {run.done}, failures {list(run.failures.values())[:2]}, exhausted {run.exhausted}, "
            f"agents {[(a.id, a.held) for a in controller.registry]}, stats {controller.stats}")


def the_run(controller):
    wait_for(lambda: controller.runs, 30, "the run")
    return next(iter(controller.runs.values()))


def test_while_a_collate_blocks_jobs_are_dispatched_and_heartbeats_answered(
        controller, agents, synthetic, monkeypatch):
    gate = Gate(block_first=True).install(monkeypatch)
    try:
        blocked_collate_keeps_the_loop_going(controller, agents, synthetic, monkeypatch, gate)
    finally:
        gate.release.set()  # a failed check must not leave the thread blocked for the next test


def blocked_collate_keeps_the_loop_going(controller, agents, synthetic, monkeypatch, gate):
    jobs, size = 12, 64
    accepted: list[str] = []
    succeeded = ProjectRun.succeeded

    def accepting(run, lease, *args, **kwargs):
        accepted.append(lease.job.key)
        return succeeded(run, lease, *args, **kwargs)

    monkeypatch.setattr(ProjectRun, "succeeded", accepting)
    project = synthetic(jobs=jobs, output_bytes=size, log_collations=True)
    live = agents(controller.url, 2)
    background = Background(controller.url, project)
    run = the_run(controller)
    assert gate.blocked.wait(60), "the first collate never began"
    since = time.monotonic()
    # every other job is rendered and its result accepted while the first collate still blocks
    try:
        wait_for(lambda: run.exhausted and not run.leases and len(run.collating) == jobs, 60,
                 "every result accepted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {describe(controller, run)}") from None
    wait_for(lambda: controller.stats["dispatched"] >= jobs, 30, "the events counted")  # by another thread
    assert run.done == 0 and controller.stats["collated"] == 0 and run.state == "running"
    # both agents keep talking to the loop (and it to them) for longer than their liveness
    deadline = since + controller.heartbeat * controller.liveness * 1.5
    wait_for(lambda: time.monotonic() > deadline, 30, "a while")
    agents_now = list(controller.registry)
    assert len(agents_now) == 2 and all(p.poll() is None for p in live)
    assert all(a.last_seen > since + controller.heartbeat for a in agents_now), "heartbeats were not read"
    assert all(a.last_sent > since + controller.heartbeat for a in agents_now), "heartbeats were not sent"
    with Client(controller.url, timeout=5) as client:  # the loop answers clients too
        assert client.status()["projects"][0]["done"] == 0
    assert not background.done()
    gate.release.set()
    wait_for(background.done, 60, "the run")
    assert background.error is None and background.summary.ok and background.summary.done == jobs
    assert gate.returned == accepted, "collates ran out of the order their results were accepted"
    assert gate.threads == {"farm-collate"}
    lines = (project / "output" / "collated.log").read_text().split()
    assert sorted(lines) == [job_key(i) for i in range(jobs)]  # each once
    assert all((project / "output" / f"{job_key(i)}.bin").read_bytes() == payload(job_key(i), size)
               for i in range(jobs))


def test_a_collate_that_raises_fails_the_attempt_and_is_retried(controller, agents, synthetic, monkeypatch):
    gate = Gate(failing=[job_key(2)], fail_times=1).install(monkeypatch)
    agents(controller.url, 2)
    background = Background(controller.url, synthetic(jobs=6, output_bytes=16))
    wait_for(background.done, 60, "the run")
    assert background.summary.ok and background.summary.done == 6
    assert gate.failed == [job_key(2)] and gate.returned.count(job_key(2)) == 1
    wait_for(lambda: controller.stats["retried"] >= 1, 30, "the retry counted")  # by another thread
    assert controller.stats["retried"] == 1


def test_a_collate_that_always_raises_fails_the_job_with_its_error(
        controller, agents, synthetic, monkeypatch):
    Gate(failing=[job_key(1)]).install(monkeypatch)
    agents(controller.url, 2)
    project = synthetic(jobs=4, output_bytes=16, extra="[jobs]\nmax_attempts = 2\n")
    background = Background(controller.url, project)
    wait_for(background.done, 60, "the run")
    summary = background.summary
    assert not summary.ok and summary.done == 3
    [failure] = summary.failures
    assert failure["job"] == job_key(1) and failure["attempts"] == 2
    assert failure["error"] == f"collating its outputs failed: RuntimeError: collate refused {job_key(1)}"


def test_finalize_waits_for_every_pending_collate(controller, agents, synthetic, monkeypatch):
    jobs = 8
    gate = Gate(blocking=[job_key(jobs - 1)]).install(monkeypatch)
    agents(controller.url, 2)
    background = Background(controller.url, synthetic(jobs=jobs, output_bytes=16))
    run = the_run(controller)
    assert gate.blocked.wait(60), "the last collate never began"
    wait_for(lambda: run.exhausted and not run.leases and not run.ready, 60, "every job in")
    assert run.collating and not run.all_in() and run.state == "running" and gate.finalize_saw is None
    assert controller.scheduler.stalled(run) is None  # waiting on a collate is not being stuck
    gate.release.set()
    wait_for(background.done, 60, "the run")
    assert background.summary.ok and gate.finalize_saw == [jobs]


CONTROLLER = """
import runpy, sys, threading
import farm_synthetic
collate = farm_synthetic.Synthetic.collate
def gated(media, job, result, outputs, ctx):
    if (ctx.project.root / ("block-" + job.key)).exists():
        (ctx.project.root / "collating").write_text(job.key)
        threading.Event().wait()  # until this process is killed
    collate(media, job, result, outputs, ctx)
farm_synthetic.Synthetic.collate = gated
sys.argv = ["farm", *sys.argv[1:]]
runpy.run_module("farm", run_name="__main__")
"""


def test_a_controller_killed_mid_collate_runs_that_job_again_and_collates_it_once(
        tmp_path, agents, synthetic):
    jobs, size, blocked = 40, 16, job_key(17)
    agent_tmp = AgentTmp()
    project = synthetic(jobs=jobs, sleep=0.01, output_bytes=size, log_collations=True,
                        render_log="renders.log")
    (project / f"block-{blocked}").write_text("")
    script = tmp_path / "controller.py"
    script.write_text(CONTROLLER)
    url, state = f"ipc://{tmp_path}/controller.sock", tmp_path / "state"

    def start_controller() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(script), "--log-level", "warning", "controller",
                                 "--bind", url, "--state-dir", str(state), "--heartbeat", "0.5",
                                 "--liveness", "4"])

    ctl = start_controller()
    try:
        agents(url, 2, env=agent_tmp.env)
        with Client(url, timeout=60) as client:
            run_id = client.submit(load_project(project))
            wait_for(lambda: (project / "collating").exists(), 60, "the blocking collate")
            # the loop still answers while the collate thread blocks
            assert any(p["id"] == run_id and p["state"] == "running" for p in client.status()["projects"])
        os.kill(ctl.pid, signal.SIGKILL)
        ctl.wait()
        with sqlite3.connect(state / "journal.sqlite") as db:
            done = {k for (k,) in db.execute("SELECT key FROM jobs WHERE state = 'done'")}
        assert blocked not in done  # its collate never returned: not done
        (project / f"block-{blocked}").unlink()
    finally:
        ctl.terminate()
        ctl.wait()
    rendered = follow_after_restart(start_controller, url, run_id, jobs, agent_tmp)
    assert rendered.count(blocked) == 2  # rendered again after the restart
    collated = (project / "output" / "collated.log").read_text().split()
    assert collated.count(blocked) == 1 and set(collated) == {job_key(i) for i in range(jobs)}
    assert all((project / "output" / f"{job_key(i)}.bin").read_bytes() == payload(job_key(i), size)
               for i in range(jobs))


def test_cached_outputs_that_fail_to_collate_are_rendered_instead(controller, agents, synthetic, monkeypatch):
    jobs = 5
    project = synthetic(jobs=jobs, output_bytes=16, cache=True)
    agents(controller.url, 2)
    first = Background(controller.url, project)
    wait_for(first.done, 60, "the first run")
    assert first.summary.ok and first.summary.reused == 0
    gate = Gate(failing=[job_key(3)], fail_times=1).install(monkeypatch)
    again = Background(controller.url, project)
    wait_for(again.done, 60, "the second run")
    summary = again.summary
    assert summary.ok and summary.done == jobs and summary.reused == jobs - 1, summary
    assert gate.failed == [job_key(3)] and gate.returned.count(job_key(3)) == 1
    assert (project / "output" / f"{job_key(3)}.bin").read_bytes() == payload(job_key(3), 16)
