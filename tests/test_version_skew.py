"""A controller and an agent with different versions of a plugin: the agent gets none of that
media type's jobs, and `farm status` and the run's stall reason say why; with matching
versions it renders. Two `farm plugin new` copies, pip-installed into folders of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import restartable_url, wait_for
from test_seams_scheduler import farm  # noqa: F401 (a fixture: a scheduler and a maker of runs)

from farm.client import Client
from farm.controller.versions import read_versions
from farm.errors import ProtocolError

FARM = [sys.executable, "-m", "farm"]



def install(package: Path, site: Path) -> dict[str, str]:
    """pip-install `package` into `site`; an environment whose Python finds it there."""
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install",
                           "--no-deps", "--target", str(site), str(package)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def status(url: str) -> dict:
    with Client(url, timeout=10) as client:
        return client.status()


@pytest.mark.slow
def test_an_agent_with_another_plugin_version_gets_none_of_its_jobs_and_status_says_why(tmp_path, agents):
    made = subprocess.run([*FARM, "plugin", "new", "skewed", "--dir", str(tmp_path / "v1")],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    v1 = tmp_path / "v1" / "farm-skewed"
    v2 = tmp_path / "v2"
    subprocess.run(["cp", "-r", str(v1), str(v2)], check=True)
    meta = v2 / "pyproject.toml"
    meta.write_text(meta.read_text().replace('version = "0.1.0"', 'version = "0.2.0"', 1))
    env_v1, env_v2 = install(v1, tmp_path / "site1"), install(v2, tmp_path / "site2")

    url = restartable_url()
    ctl = subprocess.Popen([*FARM, "--log-level", "warning", "controller", "--bind", url, "--insecure",
                            "--state-dir", str(tmp_path / "state"), "--heartbeat", "0.5"], env=env_v1)
    submit = None
    try:
        wait_for(lambda: _up(url), 60, "the controller")
        agents(url, 1, env={"PYTHONPATH": env_v2["PYTHONPATH"]})  # agent-0: version 0.2.0
        skewed = wait_for(lambda: next(iter(status(url)["agents"]), None), 60, "the 0.2.0 agent")
        why = "agent agent-0 has farm-skewed 0.2.0, the controller 0.1.0"
        assert skewed["plugins"]["skewed"] == "0.2.0" and skewed["skew"] == {"skewed": why}

        submit = subprocess.Popen([*FARM, "submit", "project", "--controller", url, "--insecure", "--json"],
                                  cwd=v1, env=env_v1, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        stalled = wait_for(lambda: next((p["stalled"] for p in status(url)["projects"] if p["stalled"]),
                                        None), 60, "the run to say why it waits")
        assert stalled == f"no connected agent can render 'skewed' ({why})"
        shown = subprocess.run([*FARM, "status", "--controller", url, "--insecure"], env=env_v1,
                               capture_output=True, text=True, timeout=60)
        assert f"takes no skewed jobs: {why}" in shown.stdout and f"waiting: {stalled}" in shown.stdout
        assert status(url)["projects"][0]["done"] == 0

        agents(url, 1, env={"PYTHONPATH": env_v1["PYTHONPATH"]})  # agent-1: the controller's version
        out, err = submit.communicate(timeout=180)
        assert submit.returncode == 0, out + err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["state"] == "done" and summary["jobs"]["done"] == summary["jobs"]["total"] == 3
        assert (v1 / "project" / "output" / "index.txt").read_text().count("item-") == 6
        by_id = {a["id"]: a for a in status(url)["agents"]}
        assert by_id["agent-0"]["done"] == 0 and by_id["agent-1"]["done"] == 3  # none went to 0.2.0
        assert by_id["agent-1"]["skew"] == {}
    finally:
        if submit is not None and submit.poll() is None:
            submit.kill()
            submit.wait()
        ctl.terminate()
        assert ctl.wait(30) == 0


def _up(url: str) -> bool:
    try:
        status(url)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("value", [
    ["skewed"], {"skewed": 2}, {"": "1.0"}, {"skewed": "x" * 201}, {f"m{i}": "1" for i in range(1025)},
])
def test_a_hello_with_a_malformed_plugins_map_is_refused(value):
    with pytest.raises(ProtocolError, match="HELLO: plugins"):
        read_versions(value)


def test_a_hello_without_plugins_is_an_older_agent_taken_as_before():
    assert read_versions(None) is None
    assert read_versions({"maptiles": "1.2.3"}) == {"maptiles": "1.2.3"}


def test_the_scheduler_skips_a_skewed_agent_and_the_runs_progress_says_why(farm):  # noqa: F811
    from test_seams_scheduler import agent  # a hand-made AgentState

    run = farm.make(4)
    why = "agent n1 has farm 9.9, the controller 1.0"
    skewed, same = agent("n1", slots=4), agent("n2", slots=1)
    skewed.skew = {"synthetic": why}
    farm.registry.add(skewed)
    farm.registry.add(same)
    decided = {a.id: len(leases) for a, leases in farm.dispatch(0.0)}
    assert decided == {"n2": 1}  # n1 has room for 4 and gets none
    progress = farm.describe(run)
    assert progress["stalled"] is None and progress["skipped"] == [why]
    farm.registry.remove(same.identity)
    for lease in list(run.leases.values()):
        run.lost_lease(lease, "gone")
    assert farm.describe(run)["stalled"] == f"no connected agent can render 'synthetic' ({why})"
