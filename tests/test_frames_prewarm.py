"""A worker starts its Blender before its first job (`Frames.prewarm`, a spare waiting for its
scene), and the first job takes it over only where it was started as that job's own Blender
would be. Real Blender and, end to end, a real embedded farm.

Each scene script here appends its Blender's pid to a file when it runs, so which Blender
loaded the scene, and how often, is read from the file, not from the plugin's own word.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mapnik
import pytest
from conftest import wait_for
from farm_frames.images import check_image
from farm_frames.media import Frames
from farm_frames.warm import SLOT
from test_frames import _gone, blender, write_project  # noqa: F401
from test_frames_warm import LOADS, Worker, assert_match_reference, loads

from farm.embedded import EmbeddedFarm
from farm.errors import RenderError
from farm.project import load_project

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_blender_left() -> Iterator[None]:
    SLOT.stop()
    yield
    SLOT.stop()


def spare(slot: Path, threads: int = 2) -> int:
    """Start a spare for the slot folder ``slot`` (as a worker does at its start); its pid."""
    Frames().prewarm(slot / "work", threads)
    assert SLOT.running is not None and SLOT.running.key is None
    return SLOT.running.proc.pid


def test_the_first_job_takes_over_the_spare_and_matches_one_process(blender, tmp_path):  # noqa: F811
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-3", scene_extra=LOADS.format(path=str(pids)))
    waiting = spare(tmp_path / "slot")
    assert loads(pids) == []  # no scene yet: it waits for its job
    worker = Worker(root, tmp_path / "slot")  # threads=2 and the slot's folder, as the spare was started
    frames = tmp_path / "frames"
    first = worker.render([[1, 2]], frames)
    second = worker.render([[3, 3]], frames)
    assert (first["prewarmed"], first["warm"]) == (True, False)
    assert (second["prewarmed"], second["warm"]) == (False, True)
    assert first["blender_pid"] == second["blender_pid"] == waiting
    assert loads(pids) == [waiting]  # the spare ran the scene script, once
    assert_match_reference(blender, root, frames, 1, 3, tmp_path)
    SLOT.stop()  # the same frames from a Blender started for its job: the very same pixels
    cold = Worker(root, tmp_path / "cold-slot").render([[1, 3]], tmp_path / "cold")
    assert cold["prewarmed"] is False
    for n in (1, 2, 3):
        name = f"frame_{n:06d}.png"
        one, two = mapnik.Image.open(str(frames / name)), mapnik.Image.open(str(tmp_path / "cold" / name))
        assert one.compare(two, 0) == 0, f"{name} differs from a cold Blender's"


def test_a_spare_for_other_threads_is_replaced_unused(blender, tmp_path):  # noqa: F811
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-2", scene_extra=LOADS.format(path=str(pids)))
    waiting = spare(tmp_path / "slot", threads=3)  # the job comes with 2
    result = Worker(root, tmp_path / "slot").render([[1, 2]], tmp_path / "frames")
    assert result["prewarmed"] is False and result["blender_pid"] != waiting
    assert _gone(waiting)
    assert loads(pids) == [result["blender_pid"]]  # the spare never saw the scene
    assert_match_reference(blender, root, tmp_path / "frames", 1, 2, tmp_path)


def test_a_spare_in_another_folder_is_replaced_unused(blender, tmp_path):  # noqa: F811
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-1", scene_extra=LOADS.format(path=str(pids)))
    waiting = spare(tmp_path / "other-slot")
    result = Worker(root, tmp_path / "slot").render([[1, 1]])
    assert result["prewarmed"] is False and _gone(waiting)
    assert loads(pids) == [result["blender_pid"]]


def test_a_spare_that_cannot_set_the_format_as_the_command_line_does_gives_way(blender, tmp_path):  # noqa: F811
    """EXR frames: ``-F OPEN_EXR`` sets the format alone, Python would change the colour depth with
    it; the spare says so after loading the scene and a Blender started for the job renders."""
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-2", frames_extra='format = "exr"',
                         scene_extra=LOADS.format(path=str(pids)))
    waiting = spare(tmp_path / "slot")
    frames = tmp_path / "frames"
    result = Worker(root, tmp_path / "slot").render([[1, 2]], frames)
    assert result["prewarmed"] is False and result["blender_pid"] != waiting and _gone(waiting)
    assert loads(pids) == [waiting, result["blender_pid"]]
    for n in (1, 2):
        check_image(frames / f"frame_{n:06d}.exr", "exr")


def test_a_blend_scene_replaces_the_spare(blender, tmp_path):  # noqa: F811
    root = write_project(tmp_path / "p", frames="1-1")
    save = f"import bpy; bpy.ops.wm.save_as_mainfile(filepath={str(root / 'scene.blend')!r})"
    subprocess.run([blender, "-b", "--factory-startup", "--python-exit-code", "1",
                    "--python", str(root / "scene.py"), "--python-expr", save],
                   capture_output=True, check=True)
    toml = root / "farm.toml"
    toml.write_text(toml.read_text().replace('scene = "scene.py"', 'scene = "scene.blend"'))
    waiting = spare(tmp_path / "slot")
    result = Worker(root, tmp_path / "slot").render([[1, 1]], tmp_path / "frames")
    assert result["prewarmed"] is False and result["blender_pid"] != waiting and _gone(waiting)
    assert [p.name for p in (tmp_path / "frames").iterdir()] == ["frame_000001.png"]


def test_a_spare_that_died_is_replaced(blender, tmp_path):  # noqa: F811
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-1", scene_extra=LOADS.format(path=str(pids)))
    waiting = spare(tmp_path / "slot")
    os.kill(waiting, 9)
    wait_for(lambda: SLOT.running is not None and SLOT.running.proc.poll() is not None, 30,
             "the spare to die")
    result = Worker(root, tmp_path / "slot").render([[1, 1]], tmp_path / "frames")
    assert result["prewarmed"] is False and loads(pids) == [result["blender_pid"]] != [waiting]


def test_a_scene_that_fails_in_the_spare_fails_as_in_a_cold_blender(blender, tmp_path):  # noqa: F811
    root = write_project(tmp_path / "p", scene_extra="\nraise RuntimeError('farm-test: broken scene')\n")
    waiting = spare(tmp_path / "slot")
    with pytest.raises(RenderError, match=r"(?s)exited with code 1 loading the scene for frames 1.*"
                                          r"scene\.py.*farm-test: broken scene"):
        Worker(root, tmp_path / "slot").render([[1, 1]])
    assert SLOT.running is None and _gone(waiting)


def _blenders_under(pid: int) -> list[int]:
    """The Blender processes among ``pid``'s descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit():
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                if Path(f"/proc/{child}/comm").read_text().strip().startswith("blender"):
                    found.append(child)
            except OSError:
                pass
    return found


@pytest.mark.timeout(180)
def test_an_embedded_agents_worker_starts_blender_before_its_first_job(blender, tmp_path):  # noqa: F811
    """Through a real agent and worker: a Blender is up under the agent before any project is
    submitted, and that Blender is the one that loads the scene and renders."""
    pids = tmp_path / "loads"
    root = write_project(tmp_path / "p", frames="1-2", frames_extra="chunk = 2",
                         scene_extra=LOADS.format(path=str(pids)))
    with EmbeddedFarm(tmp_path / "state", 1, media_types=["frames"]) as farm:
        waiting = wait_for(lambda: _blenders_under(farm.procs[0].pid), 120, "a Blender before any job")
        assert loads(pids) == []
        summary = farm.submit(load_project(root))
        assert summary.ok, summary.failures
        assert loads(pids) == waiting  # the Blender started before the job loaded its scene, once
    for pid in waiting:
        wait_for(lambda pid=pid: _gone(pid), 30, f"Blender {pid} to stop with its agent")
    names = sorted(p.name for p in (root / "output" / "frames").iterdir())
    assert names == ["frame_000001.png", "frame_000002.png"]
