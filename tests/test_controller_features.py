"""One controller, many projects: priorities, cancel, status; capabilities across media types."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import Background, wait_for, write_project

from farm.client import Client, submit
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


def test_a_higher_priority_project_overtakes_a_running_one(controller, agents, synthetic):
    agents(controller.url, 1)
    low = Background(controller.url, synthetic(jobs=30, sleep=0.1, name="low"))
    wait_for(lambda: controller.stats["collated"] >= 1, 60, "the low-priority project to start")
    with Client(controller.url) as client:
        high_id = client.submit(load_project(synthetic(jobs=5, sleep=0.1, name="high")), priority=10)
        high = client.follow(high_id)
    assert high.ok and high.done == 5
    assert not low.done(), "the low-priority project finished first"
    wait_for(low.done, 120, "the low-priority project")
    assert low.summary.ok and low.summary.done == 30


def test_cancel_withdraws_a_project_and_the_agents_carry_on(controller, agents, synthetic):
    agents(controller.url, 2)
    with Client(controller.url) as client:
        run_id = client.submit(load_project(synthetic(jobs=200, sleep=0.2, name="doomed")))
        wait_for(lambda: controller.stats["collated"] >= 2, 60, "some progress")
    done = subprocess.run([*FARM, "cancel", run_id, "--controller", controller.url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "doomed (synthetic): cancelled" in done.stdout
    state = {p["id"]: p for p in controller.status()["projects"]}[run_id]
    assert state["state"] == "cancelled" and state["running"] == 0 and state["done"] < 200
    after = submit(controller.url, load_project(synthetic(jobs=10, name="next")))
    assert after.ok and after.done == 10


def test_status_lists_agents_and_projects_as_json_and_text(controller, agents, synthetic):
    agents(controller.url, 2, extra=["--tag", "gpu"])
    submit(controller.url, load_project(synthetic(jobs=4)))
    report = json.loads(subprocess.run([*FARM, "status", "--json", "--controller", controller.url],
                                       capture_output=True, text=True, timeout=60).stdout)
    assert sorted(a["id"] for a in report["agents"]) == ["agent-0", "agent-1"]
    assert all("gpu" in a["capabilities"] and "synthetic" in a["capabilities"] for a in report["agents"])
    assert {p["project"]: p["state"] for p in report["projects"]} == {"synth": "done"}
    text = subprocess.run([*FARM, "status", "--controller", controller.url], capture_output=True, text=True,
                          timeout=60).stdout
    assert "agents (2):" in text and "synth" in text and "4/4 done" in text


def test_an_agent_without_blender_never_receives_frame_jobs(controller, agents, tmp_path):
    project = write_project(tmp_path / "frames", "frames", 'scene = "scene.py"\nframes = "1-2"\nchunk = 1\n'
                            "resolution = [32, 18]\nsamples = 1\n")
    (project / "scene.py").write_text("import bpy\n")  # the default scene: a cube, a light, a camera
    agents(controller.url, 1, env={"FARM_BLENDER": "/nonexistent/blender"})
    wait_for(lambda: controller.status()["agents"], 60, "the blender-less agent")
    (blind,) = controller.status()["agents"]
    assert "frames" not in blind["capabilities"] and "frames" in blind["unavailable"]
    with Client(controller.url) as client:
        run_id = client.submit(load_project(project))
        stalled = wait_for(lambda: client.receive().body.get("stalled"), 60, "a stalled update")
        assert "not an executable file" in stalled
        agents(controller.url, 1)
        summary = client.follow(run_id)
    assert summary.ok, summary.failures
    by_id = {a["id"]: a for a in controller.status()["agents"]}
    assert by_id["agent-0"]["done"] == 0 and by_id["agent-1"]["done"] == 2


def test_a_second_controller_on_the_same_state_folder_is_refused(controller, tmp_path):
    import pytest

    from farm.controller.server import Controller
    from farm.errors import FarmError

    second = Controller("tcp://127.0.0.1:0", state_dir=controller.state_dir)
    with pytest.raises(FarmError, match="another controller is using the state folder"):
        second.start()
    second.stop()
    # the first one is unharmed
    assert controller.wait(0) and controller.status()["agents"] == []


def test_status_shows_what_each_agent_is_running(controller, agents, synthetic):
    agents(controller.url, 1)
    with Client(controller.url) as client:
        client.submit(load_project(synthetic(jobs=3, sleep=30, name="long")))
        (agent,) = wait_for(lambda: [a for a in client.status()["agents"] if a["current"]], 60, "a running job")
    assert agent["current"] == ["long/job-0000000"]


def test_a_relative_state_dir_still_takes_uploads(tmp_path, agents, synthetic, monkeypatch):
    # `farm controller --state-dir state` once refused every remote submit: uploads/ was relative
    from farm.controller.server import Controller

    monkeypatch.chdir(tmp_path)
    ctl = Controller("tcp://127.0.0.1:0", state_dir="state").start()
    try:
        agents(ctl.url, 1)
        project = synthetic(jobs=3, output_bytes=8)
        summary = submit(ctl.url, load_project(project), upload=True)
        assert summary.ok, summary
        assert len(list((project / "output").glob("*.bin"))) == 3
    finally:
        ctl.stop(shutdown_agents=True)
