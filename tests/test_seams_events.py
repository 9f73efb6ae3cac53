"""The controller's event stream: observers in process, subscribers over the socket, `farm events`."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time

from conftest import Background, wait_for

from farm.client import Client, submit
from farm.controller.events import EventBus
from farm.controller.server import Controller
from farm.hookspecs import hookimpl
from farm.plugins import PluginInfo, get_plugins
from farm.project import load_project


def keys(n: int) -> list[str]:
    return [f"job-{i:07d}" for i in range(n)]


class Subscriber:
    """A remote subscriber in a thread: collects events until a run finishes (or it is told to stop)."""

    def __init__(self, url: str, since: int | None = 0, stop_after: int | None = None) -> None:
        self.events: list[dict] = []
        self.missed = 0
        self.stop_after = stop_after
        self.thread = threading.Thread(target=self._read, args=(url, since), daemon=True)
        self.thread.start()

    def _read(self, url: str, since: int | None) -> None:
        with Client(url) as client:
            for event in client.events(since, on_missed=self._missed):
                self.events.append(event)
                if event["type"] == "run.finished" or (self.stop_after and len(self.events) >= self.stop_after):
                    return

    def _missed(self, count: int) -> None:
        self.missed += count


def test_chaos_run_every_job_announced_done_exactly_once(controller, agents, synthetic):
    jobs = 300
    seen: list = []
    controller.events.observe(seen.append)
    remote = Subscriber(controller.url, since=0)
    live = agents(controller.url, 3)
    run = Background(controller.url, synthetic(jobs=jobs, sleep=0.01, output_bytes=8))
    wait_for(lambda: controller.stats["collated"] >= 60, 120, "some jobs done")
    live[0].kill()  # mid-run: its leases come back and are run elsewhere
    live[0].wait()
    agents(controller.url, 1)
    wait_for(run.done, 180, "the run")
    assert run.summary.ok, run.summary
    remote.thread.join(60)
    assert controller.events.drain(10)
    for stream in (seen, [e for e in remote.events]):
        types = [e.type if hasattr(e, "type") else e["type"] for e in stream]
        done = collections.Counter((e.job if hasattr(e, "job") else e["job"])
                                   for e, t in zip(stream, types, strict=True) if t == "job.done")
        assert sorted(done) == keys(jobs) and set(done.values()) == {1}
        assert "agent.left" in types and types.count("run.finished") == 1
    seqs = [e["seq"] for e in remote.events]
    assert seqs == list(range(1, len(seqs) + 1))  # in order, no gap, no repeat
    left = next(e for e in remote.events if e["type"] == "agent.left")
    assert left["agent"] == "agent-0" and left["reason"]
    finished = remote.events[-1]
    assert finished["type"] == "run.finished" and finished["state"] == "done" and finished["done"] == jobs
    assert {"run.submitted", "run.started", "job.started", "agent.joined", "progress"} <= set(types)


def test_a_resumed_subscriber_misses_nothing_within_the_buffer(controller, agents, synthetic):
    agents(controller.url, 2)
    first = Subscriber(controller.url, since=0, stop_after=40)
    assert submit(controller.url, load_project(synthetic(jobs=50))).ok
    first.thread.join(30)
    assert len(first.events) == 40
    resumed = Subscriber(controller.url, since=first.events[-1]["seq"])
    resumed.thread.join(30)  # reads on to run.finished
    everything = [e.to_wire() for e in controller.events.buffer]
    got = first.events + resumed.events
    assert [e["seq"] for e in got] == [e["seq"] for e in everything][:len(got)]
    assert [e["type"] for e in got] == [e["type"] for e in everything][:len(got)]
    assert got[-1]["type"] == "run.finished" and resumed.missed == 0


def test_events_beyond_the_buffer_are_reported_missed():
    bus = EventBus(buffer=10)
    for i in range(25):
        bus.publish("job.done", "r", f"job-{i}")
    events, missed = bus.since(3, 100)
    assert missed == 12 and [e.seq for e in events] == list(range(16, 26))
    events, missed = bus.since(20, 2)
    assert missed == 0 and [e.job for e in events] == ["job-20", "job-21"]
    assert bus.since(25, 5) == ([], 0)


class Hostile:
    """A plugin whose event observer raises on every event and is slow besides."""

    calls = 0

    @hookimpl
    def farm_event(self, event):
        Hostile.calls += 1
        time.sleep(0.002)
        raise RuntimeError("an observer with a bug")


def test_a_raising_slow_observer_changes_nothing(tmp_path, agents, synthetic):
    plugins = get_plugins()
    hostile = Hostile()
    plugins.register(hostile, PluginInfo("hostile", None, __name__))
    try:
        ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
        try:
            agents(ctl.url, 2)
            project = synthetic(jobs=200, output_bytes=8, log_collations=True)
            summary = submit(ctl.url, load_project(project))
            assert summary.ok and summary.done == 200
            assert sorted((project / "output" / "collated.log").read_text().split()) == keys(200)
            assert ctl.stats["collated"] == 200 or wait_for(lambda: ctl.stats["collated"] == 200, 30, "counts")
            assert Hostile.calls > 0 and ctl.events.observer_errors > 0
            assert not [e for e in ctl.events.buffer if e.type == "agent.left"]  # heartbeats kept up
        finally:
            ctl.stop(shutdown_agents=True)
    finally:
        plugins.manager.unregister(hostile)
        plugins.infos = [i for i in plugins.infos if i.name != "hostile"]


def test_farm_events_prints_json_lines(controller, agents, synthetic):
    agents(controller.url, 1)
    wait_for(lambda: controller.status()["agents"], 60, "the agent")
    assert submit(controller.url, load_project(synthetic(jobs=5))).ok
    out = subprocess.run([sys.executable, "-m", "farm", "events", "--controller", controller.url, "--insecure",
                          "--since", "0", "--json", "--limit", "8"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, 9))
    assert all({"seq", "time", "type", "run", "job", "agent"} <= set(e) for e in lines)
    assert lines[0]["type"] == "agent.joined" and lines[0]["agent"] == "agent-0"
    text = subprocess.run([sys.executable, "-m", "farm", "events", "--controller", controller.url, "--insecure",
                           "--since", "1", "--limit", "1"], capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "run.submitted" in text.stdout, text
