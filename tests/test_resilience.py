"""A farm that never loses work: agents killed, controllers killed, hostile frames.

Real processes and sockets throughout; every wait is on a condition.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgpack
import zmq
from agent_trust_helpers import AgentTmp
from conftest import Background, wait_for
from farm_synthetic import payload
from restart_helpers import follow_after_restart

from farm.client import Client, submit
from farm.controller.scheduler import Scheduler
from farm.controller.server import Controller
from farm.project import load_project
from farm.protocol import PROTOCOL_VERSION, T, pack

FARM = [sys.executable, "-m", "farm"]


def keys(n: int) -> list[str]:
    return [f"job-{i:07d}" for i in range(n)]


def assert_outputs_complete(project: Path, n: int, size: int) -> None:
    for key in keys(n):
        assert (project / "output" / f"{key}.bin").read_bytes() == payload(key, size), key


def test_chaos_agents_killed_over_and_over_every_job_collated_once(controller, agents, synthetic):
    jobs, size = 600, 32
    project = synthetic(jobs=jobs, sleep=0.004, output_bytes=size, log_collations=True)
    live = agents(controller.url, 3)
    run = Background(controller.url, project)
    kills = 0
    rng = random.Random(7)
    while not run.done():
        mark = controller.stats["collated"]
        # let some work land, then kill an agent that is busy right now and start a fresh one
        if not wait_for(lambda mark=mark: run.done() or controller.stats["collated"] >= mark + 60, 120, "progress"):
            break
        if run.done():
            break
        victim = live.pop(rng.randrange(len(live)))
        victim.kill()
        victim.wait()
        kills += 1
        live += agents(controller.url, 1)
    assert run.error is None, run.error
    assert kills >= 4, f"only {kills} kills happened; make the run longer"
    assert run.summary.ok, run.summary.failures[:2]
    collated = (project / "output" / "collated.log").read_text().split()
    assert len(collated) == jobs and sorted(collated) == keys(jobs)  # exactly once each
    assert_outputs_complete(project, jobs, size)


def test_controller_killed_mid_run_resumes_without_rendering_done_jobs_again(tmp_path, agents, synthetic):
    jobs, size = 300, 16
    agent_tmp = AgentTmp()  # each render is logged in the agent's copy of the project
    project = synthetic(jobs=jobs, sleep=0.02, output_bytes=size, render_log="renders.log")
    url = f"ipc://{tmp_path}/controller.sock"
    state = tmp_path / "state"

    def start_controller() -> subprocess.Popen[bytes]:
        return subprocess.Popen([*FARM, "controller", "--bind", url, "--state-dir", str(state),
                                 "--heartbeat", "0.5", "--liveness", "4"])

    ctl = start_controller()
    agents(url, 2, env=agent_tmp.env)
    with Client(url, timeout=60) as client:
        run_id = client.submit(load_project(project))
        wait_for(lambda: client.receive().body.get("done", 0) >= 80, 120, "80 jobs done")
    ctl.kill()
    ctl.wait()
    with sqlite3.connect(state / "journal.sqlite") as db:
        done_before = {k for (k,) in db.execute("SELECT key FROM jobs WHERE state = 'done'")}
    assert len(done_before) >= 40  # batches commit every 50 ms; most of the 80 are durable

    rendered = follow_after_restart(start_controller, url, run_id, jobs, agent_tmp)
    again = [k for k in done_before if rendered.count(k) != 1]
    assert not again, f"{len(again)} jobs that were done were rendered again, e.g. {again[:3]}"
    assert_outputs_complete(project, jobs, size)


def test_agent_started_before_its_controller(tmp_path, agents, synthetic):
    url = f"ipc://{tmp_path}/late.sock"
    agents(url, 2)
    ctl = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    try:
        summary = submit(url, load_project(synthetic(jobs=30)))
    finally:
        ctl.stop(shutdown_agents=True)
    assert summary.ok and summary.done == 30


def test_a_politely_stopped_agent_hands_its_jobs_back_at_once(tmp_path, agents, synthetic):
    # liveness of 60 s: only the agent's BYE can get its jobs requeued in time
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=1.0, liveness=60).start()
    try:
        project = synthetic(jobs=40, sleep=0.05)
        first = agents(ctl.url, 1)[0]
        run = Background(ctl.url, project)
        wait_for(lambda: ctl.stats["collated"] >= 5, 60, "some progress")
        agents(ctl.url, 1)
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        wait_for(run.done, 30, "the run to finish without the stopped agent")
        assert run.summary.ok and run.summary.done == 40
    finally:
        ctl.stop(shutdown_agents=True)


class GarblingScheduler(Scheduler):
    """A scheduler whose controller sends every agent garbage before each batch of real jobs."""

    controller: Controller

    def dispatch(self, now):
        decisions = super().dispatch(now)
        for agent, leases in decisions:
            rng = random.Random(len(leases))
            for frames in garbage(rng, 3):
                self.controller.sock.send_multipart([agent.identity, *frames])
        return decisions


def garbage(rng: random.Random, count: int) -> list[list[bytes]]:
    valid = pack(T.HEARTBEAT)
    out = []
    for _ in range(count):
        choice = rng.randrange(5)
        if choice == 0:
            out.append([rng.randbytes(rng.randrange(1, 40))])
        elif choice == 1:
            out.append([bytes((PROTOCOL_VERSION, T.JOBS)), msgpack.packb({"jobs": [{"lease": 3}], "projects": 1})])
        elif choice == 2:
            out.append([bytes((PROTOCOL_VERSION, rng.randrange(256))), rng.randbytes(20)])
        elif choice == 3:
            body = bytearray(valid[1] + rng.randbytes(8))
            out.append([valid[0], bytes(body)])
        else:
            out.append([bytes((PROTOCOL_VERSION, T.RESULTS)),
                        msgpack.packb({"results": [["nope", True, None, [["../x", 1]], None, None, 0.0, False,
                                                    True]]}), b"x"])
    return out


def test_random_and_mutated_frames_at_a_live_controller_and_agent(tmp_path, agents, synthetic):
    garbling = GarblingScheduler()
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4,
                     scheduler=garbling)
    garbling.controller = ctl
    ctl.start()
    zctx = zmq.Context.instance()
    attackers = []
    try:
        agents(ctl.url, 2)
        rng = random.Random(1)
        for i in range(5):  # strangers: some pose as agents with a HELLO first, some never do
            sock = zctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(ctl.url)
            if i % 2:
                sock.send_multipart(pack(T.HELLO, {"agent": f"evil{i}", "host": "x", "pid": 1, "slots": 1,
                                                   "prefetch": 0, "caps": [], "held": [], "version": "0"}))
            for frames in garbage(rng, 200):
                sock.send_multipart(frames)
            attackers.append(sock)
        project = synthetic(jobs=200, output_bytes=8, log_collations=True)
        summary = submit(ctl.url, load_project(project))
        assert summary.ok and summary.done == 200
        assert sorted((project / "output" / "collated.log").read_text().split()) == keys(200)
        assert ctl.stats["bad_messages"] > 0
        assert not (tmp_path / "x").exists()
    finally:
        for sock in attackers:
            sock.close(0)
        ctl.stop(shutdown_agents=True)


