"""A Blender that stays up per worker slot: the scene loads once per run, jobs reuse it, and a
Blender that died, misbehaved or outlived its scene is replaced. Real Blender throughout.

Each scene script here appends its Blender's pid to a file when it runs, so "the scene was
loaded N times" is read from the file, not from the plugin's own word.
"""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest
from conftest import wait_for
from farm_frames.media import Frames, job_key
from farm_frames.warm import SLOT
from test_frames import (  # noqa: F401
    PID_FILE,
    _gone,
    assert_same_pixels,
    blender,
    reference_render,
    write_project,
)

from farm.embedded import submit_embedded
from farm.errors import RenderError
from farm.mediatype import Job, RenderContext
from farm.project import load_project
from farm.testing import run_local

pytestmark = pytest.mark.slow

LOADS = PID_FILE


def loads(path: Path) -> list[int]:
    """The pids of the Blenders that ran the scene script, once per load."""
    return [int(line) for line in path.read_text().split()] if path.exists() else []


class Worker:
    """Jobs rendered one after another as one worker slot does: one context (and cache) per run."""

    def __init__(self, root: Path, scratch: Path) -> None:
        project = load_project(root)
        self.out, work = scratch / "out", scratch / "work"
        self.out.mkdir(parents=True)
        work.mkdir(parents=True)
        self.ctx = RenderContext(project_dir=project.root, output_dir=self.out, work_dir=work,
                                 settings=project.settings, threads=2, cache={}, deps={})

    def render(self, runs: list[list[int]], keep: Path | None = None) -> dict:
        for old in self.out.rglob("*.png"):  # the worker empties its output folder between jobs
            old.unlink()
        result = dict(Frames().render(Job(job_key(runs), {"runs": runs}), self.ctx))
        if keep is not None:
            keep.mkdir(exist_ok=True)
            for frame in (self.out / "frames").iterdir():
                frame.rename(keep / frame.name)
        return result


def assert_match_reference(
    blender_path: str, root: Path, frames: Path, first: int, last: int, tmp: Path
) -> None:
    reference_render(blender_path, root, first, last, tmp / "ref")
    names = sorted(p.name for p in frames.iterdir())
    assert names, "no frames rendered"
    for name in names:
        assert_same_pixels(frames / name, tmp / "ref" / name.replace("frame_", "ref_"))


def test_second_job_reuses_the_blender_and_matches_one_process(blender, tmp_path):  # noqa: F811
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-5", scene_extra=LOADS.format(path=str(pids)))
    worker = Worker(root, tmp_path / "slot")
    frames = tmp_path / "frames"
    # out of order, a list of runs, then backwards: each job renders exactly its frames
    first = worker.render([[1, 2]], frames)
    second = worker.render([[3, 3], [5, 5]], frames)
    third = worker.render([[4, 4]], frames)
    assert (first["warm"], second["warm"], third["warm"]) == (False, True, True)
    assert first["blender_pid"] == second["blender_pid"] == third["blender_pid"]
    assert loads(pids) == [first["blender_pid"]]  # the scene script ran once for three jobs
    assert first["blender"] and first["blender"] == third["blender"]
    assert_match_reference(blender, root, frames, 1, 5, tmp_path)


def test_a_local_run_loads_the_scene_once(blender, tmp_path):  # noqa: F811
    """run_local gives every job its own output folder: the Blender stays up all the same."""
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-3", frames_extra="chunk = 1",
                         scene_extra=LOADS.format(path=str(pids)))
    run = run_local(root, threads=2)
    assert [r["warm"] for r in run.results.values()] == [False, True, True]
    assert len(loads(pids)) == 1
    assert len(list((root / "output" / "frames").iterdir())) == 3


def test_a_killed_blender_is_replaced_and_the_job_is_still_right(blender, tmp_path):  # noqa: F811
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-4", scene_extra=LOADS.format(path=str(pids)))
    worker = Worker(root, tmp_path / "slot")
    frames = tmp_path / "frames"
    old = worker.render([[1, 2]], frames)["blender_pid"]
    os.kill(old, signal.SIGKILL)  # between jobs, as an OOM killer would
    wait_for(lambda: SLOT.running is not None and SLOT.running.proc.poll() is not None, 30, "Blender to die")
    result = worker.render([[3, 4]], frames)
    assert result["warm"] is False and result["blender_pid"] != old
    assert loads(pids) == [old, result["blender_pid"]]
    assert_match_reference(blender, root, frames, 1, 4, tmp_path)


def test_a_blender_that_dies_mid_job_fails_it_and_the_next_job_starts_another(blender, tmp_path):  # noqa: F811
    marker = tmp_path / "crashed-once"
    crash = f"""
        import os
        def _crash_once(scene, *args):
            if scene.frame_current == 2 and not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                print("farm-test: crashing on frame 2", flush=True)
                os.abort()
        bpy.app.handlers.render_pre.append(_crash_once)
    """
    root = write_project(tmp_path / "p", frames="1-3", scene_extra=crash)
    worker = Worker(root, tmp_path / "slot")
    with pytest.raises(RenderError, match=r"Blender exited with code -?\d+ rendering frames 1-3") as raised:
        worker.render([[1, 3]])
    assert "farm-test: crashing on frame 2" in str(raised.value)
    assert SLOT.running is None  # nothing kept of it
    retry = worker.render([[1, 3]], tmp_path / "frames")  # the farm's retry, on the same slot
    assert retry["warm"] is False
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == [f"frame_{n:06d}.png" for n in (1, 2, 3)]


def test_the_scene_loads_again_when_its_files_change_and_for_a_new_run(blender, tmp_path):  # noqa: F811
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-4", scene_extra=LOADS.format(path=str(pids)))
    worker = Worker(root, tmp_path / "slot")
    one = worker.render([[1, 1]])["blender_pid"]
    scene = root / "scene.py"
    scene.write_text(scene.read_text() + "\n# changed\n")
    two = worker.render([[2, 2]])
    assert two["warm"] is False and two["blender_pid"] != one
    assert _gone(one)  # one Blender per slot: the old one is stopped, not left behind
    three = worker.render([[3, 3]])
    assert three["warm"] is True and three["blender_pid"] == two["blender_pid"]
    rerun = Worker(root, tmp_path / "slot2")  # a new run of the project: a new context
    four = rerun.render([[4, 4]])
    assert four["warm"] is False and _gone(two["blender_pid"])
    assert loads(pids) == [one, two["blender_pid"], four["blender_pid"]]


def test_failed_frame_checks_retire_the_blender(blender, tmp_path):  # noqa: F811
    damage = """
        import os
        def _damage(scene, *args):
            if scene.frame_current == 2:
                os.remove(scene.render.frame_path(frame=scene.frame_current))
        bpy.app.handlers.render_write.append(_damage)
    """
    root = write_project(tmp_path / "p", frames="1-3", scene_extra=damage)
    worker = Worker(root, tmp_path / "slot")
    pid = worker.render([[1, 1]])["blender_pid"]
    with pytest.raises(RenderError, match=r"frame_000002\.png was not written"):
        worker.render([[2, 2]])
    assert SLOT.running is None and _gone(pid)


@pytest.mark.timeout(240)
def test_jobs_on_an_agent_share_one_blender(blender, tmp_path):  # noqa: F811
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-4", frames_extra="chunk = 1",
                         scene_extra=LOADS.format(path=str(pids)))
    summary = submit_embedded(root, agents=1)
    assert summary.ok, summary.failures
    assert summary.done == 4
    assert len(loads(pids)) == 1, loads(pids)  # four jobs, one scene load
    wait_for(lambda: _gone(loads(pids)[0]), 30, "the agent's Blender to end with its worker")


@pytest.mark.timeout(240)
def test_a_timeout_kills_the_blender_and_leaves_no_orphan(blender, tmp_path):  # noqa: F811
    pids = tmp_path / "loads"
    hang = textwrap.dedent(LOADS.format(path=str(pids))) + textwrap.dedent(
        """
        import time
        def _hang(scene, *args):
            print("farm-test: hanging", flush=True)
            time.sleep(600)
        bpy.app.handlers.render_pre.append(_hang)
        """
    )
    root = write_project(tmp_path / "p", frames="1", scene_extra=hang,
                         tail="\n[jobs]\nmax_attempts = 1\ntimeout = 30\n")
    summary = submit_embedded(root, agents=1)
    assert not summary.ok and summary.failed == 1
    assert "timed out" in summary.failures[0]["error"]
    started = loads(pids)
    assert len(started) == 1
    wait_for(lambda: _gone(started[0]), 30, f"Blender {started[0]} to be killed with its worker")
