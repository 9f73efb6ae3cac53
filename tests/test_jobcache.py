"""Reusing finished jobs: re-submits, edits, `--watch`, and a wider zoom range."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
from agent_trust_helpers import AgentTmp
from conftest import ROOT

from farm.client import submit
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


@pytest.fixture
def agent_tmp() -> Iterator[AgentTmp]:
    """Where agents keep their copies of projects: each render is logged in the agent's copy."""
    tmp = AgentTmp()
    yield tmp
    tmp.close()


def inputs_project(synthetic, n: int = 10):
    project = synthetic(jobs=n, inputs="in", cache=True, render_log="renders.log")
    (project / "in").mkdir()
    for i in range(n):
        (project / "in" / f"job-{i:07d}.txt").write_text(f"input {i}")
    return project


def test_only_jobs_whose_inputs_changed_render_again(controller, agents, synthetic, agent_tmp):
    project = inputs_project(synthetic)
    agents(controller.url, 2, env=agent_tmp.env)
    first = submit(controller.url, load_project(project))
    assert (first.done, first.reused) == (10, 0)
    before = Counter(agent_tmp.lines("renders.log"))
    (project / "in" / "job-0000003.txt").write_text("edited 3")
    (project / "in" / "job-0000007.txt").write_text("edited 7")
    second = submit(controller.url, load_project(project))
    assert second.ok and (second.done, second.reused) == (10, 8)
    assert sorted((Counter(agent_tmp.lines("renders.log")) - before).elements()) == ["job-0000003", "job-0000007"]
    assert (project / "output" / "job-0000003.txt").read_text() == "edited 3"
    assert (project / "output" / "job-0000004.txt").read_text() == "input 4"


def test_a_resubmit_restores_deleted_outputs_without_rendering(controller, agents, synthetic, agent_tmp):
    project = inputs_project(synthetic, 6)
    agents(controller.url, 1, env=agent_tmp.env)
    submit(controller.url, load_project(project))
    shutil.rmtree(project / "output")
    again = submit(controller.url, load_project(project))
    assert (again.done, again.reused) == (6, 6)
    assert len(agent_tmp.lines("renders.log")) == 6
    assert (project / "output" / "job-0000005.txt").read_text() == "input 5"


def test_watch_renders_exactly_the_jobs_an_edit_touched(synthetic, agent_tmp):
    project = inputs_project(synthetic, 8)
    proc = subprocess.Popen([*FARM, "submit", "--watch", "--json", "--agents", "1", str(project)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **agent_tmp.env})
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["jobs"]["done"] == 8 and first["jobs"]["reused"] == 0
        before = Counter(agent_tmp.lines("renders.log"))
        (project / "in" / "job-0000002.txt").write_text("changed")
        second = json.loads(proc.stdout.readline())
        assert second["jobs"] == {"total": 8, "done": 8, "failed": 0, "reused": 7, "resumed": 0}
        assert list((Counter(agent_tmp.lines("renders.log")) - before).elements()) == ["job-0000002"]
        assert (project / "output" / "job-0000002.txt").read_text() == "changed"
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
        proc.stdout.close()


def test_a_wider_zoom_range_renders_only_the_new_zooms(controller, agents, tmp_path):
    project = tmp_path / "world_map"
    shutil.copytree(ROOT / "sample_projects" / "world_map", project, ignore=shutil.ignore_patterns("output", ".farm"))
    toml = project / "farm.toml"
    text = toml.read_text()
    zoom_line = next(line for line in text.splitlines() if line.startswith("zoom"))
    toml.write_text(text.replace(zoom_line, 'zoom = "0-2"'))
    agents(controller.url, 2)
    narrow = submit(controller.url, load_project(project))
    assert narrow.ok and narrow.reused == 0
    toml.write_text(text.replace(zoom_line, 'zoom = "0-3"'))
    wide = submit(controller.url, load_project(project))
    assert wide.ok and wide.reused == narrow.done and wide.done > narrow.done
    assert (project / "output" / "tiles" / "3" / "7" / "3.png").is_file()
    import sqlite3

    with sqlite3.connect(next((project / "output").glob("*.mbtiles"))) as db:
        assert db.execute("SELECT count(*) FROM tiles").fetchone()[0] == 1 + 4 + 16 + 64


def test_extending_a_frame_range_renders_only_the_new_frames(controller, agents, tmp_path):
    from conftest import write_project

    project = write_project(tmp_path / "frames", "frames", 'scene = "scene.py"\nframes = "1-4"\nchunk = 4\n'
                            "resolution = [32, 18]\nsamples = 1\n")
    (project / "scene.py").write_text("import bpy\n")  # the default scene
    agents(controller.url, 2)
    short = submit(controller.url, load_project(project))
    assert short.ok and (short.done, short.reused) == (1, 0)
    toml = project / "farm.toml"
    toml.write_text(toml.read_text().replace('frames = "1-4"', 'frames = "1-8"'))
    longer = submit(controller.url, load_project(project))
    assert longer.ok and (longer.done, longer.reused) == (2, 1), longer.failures
    assert len(list((project / "output" / "frames").glob("frame_*.png"))) == 8
