"""Adaptive chunks with real Blender on a real embedded farm (tiny turntable, 2 agents).

A frame-change handler in the scene sleeps, so a frame takes a known time (at least that
sleep) and the advisor's choices are bounded whatever the machine's load.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from farm_frames.framerange import iter_frames, parse_frames
from test_frames import assert_same_pixels, write_project
from test_frames import blender as blender  # the fixture: Blender's path, or a skip

from farm.controller.chunking import ladder_up
from farm.embedded import submit_embedded

#: each frame sleeps this long in Blender before it renders
FRAME_S = 0.5
SLOW = f"""
import time as _farm_time
def _farm_test_slow(scene, *args):
    _farm_time.sleep({FRAME_S})
bpy.app.handlers.frame_change_pre.append(_farm_test_slow)
"""


def job_sizes(root: Path) -> dict[str, int]:
    """Every job key the farm's journal holds for this project, with its frame count (split order)."""
    with sqlite3.connect(root / ".farm" / "journal.sqlite") as db:
        keys = sorted({key for (key,) in db.execute("SELECT key FROM jobs WHERE state = 'done'")})
    sizes = {}
    for key in keys:
        _, first, last = key.split("-")
        sizes[key] = int(last) - int(first) + 1
    return sizes


def frames_of(sizes: dict[str, int]) -> list[int]:
    return [f for key in sizes for f in range(int(key.split("-")[1]), int(key.split("-")[2]) + 1)]


def slow_project(root: Path, frames: str, *, chunk: int | None, target: float) -> Path:
    return write_project(root, frames=frames, scene_extra=SLOW,
                         frames_extra=f"chunk = {chunk}\n" if chunk is not None else "",
                         tail=f"\n[jobs]\ntarget = {target}\n")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_adaptive_chunks_render_the_same_frames_in_the_jobs_the_advisor_sizes(blender, tmp_path):
    """16 frames of at least 0.5 s on 2 agents, a 2.5 s target: at most 4 frames a job (2.5 /
    0.5 = 5, the ladder's 4), shrinking at the end; the fixed run's chunk of 8 makes 2 jobs."""
    fixed = slow_project(tmp_path / "fixed", "1-16", chunk=8, target=2.5)
    adaptive = slow_project(tmp_path / "adaptive", "1-16", chunk=None, target=2.5)
    one = submit_embedded(fixed, agents=2)
    assert one.ok, one.failures
    two = submit_embedded(adaptive, agents=2)
    assert two.ok, two.failures

    fixed_sizes, sizes = job_sizes(fixed), job_sizes(adaptive)
    assert list(fixed_sizes.values()) == [8, 8] and one.total == 2
    assert frames_of(sizes) == list(range(1, 17))  # every frame once, in order
    assert two.total == two.done == len(sizes) != len(fixed_sizes)
    split = list(sizes.values())
    assert split[0] == 4  # the default chunk for 16 frames, before any time is known
    remaining = 16
    for size in split:
        # by time: (2.5 s - start-up) / >= 0.5 s a frame <= 5: the ladder's 4 at most; near the
        # end, what is left over the 2 slots (rounded up the ladder)
        assert size <= min(4, max(1, ladder_up(-(-remaining // 2)))) or size == remaining, split
        remaining -= size
    assert split[-1] <= 2, split  # the tail shrank

    frames = sorted((fixed / "output" / "frames").glob("frame_*.png"))
    others = sorted((adaptive / "output" / "frames").glob("*.png"))
    assert [p.name for p in frames] == [p.name for p in others]
    assert len(frames) == 16
    for path in frames:
        assert_same_pixels(path, adaptive / "output" / "frames" / path.name)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_adaptive_jobs_are_reused_when_a_rerun_chooses_other_sizes(blender, tmp_path):
    """A re-submit with another target (so other sizes by time), then a wider frame range: the
    jobs done before are found whatever their size, and only new frames render."""
    root = slow_project(tmp_path / "p", "1-12", chunk=None, target=2.5)
    first = submit_embedded(root, agents=2)
    assert first.ok, first.failures
    before = job_sizes(root)
    assert frames_of(before) == list(range(1, 13))

    toml = root / "farm.toml"
    toml.write_text(toml.read_text().replace("target = 2.5", "target = 30"))  # would pick 48-frame jobs
    again = submit_embedded(root, agents=2)
    assert again.ok, again.failures
    assert again.reused == again.total == len(before)  # nothing rendered

    toml.write_text(toml.read_text().replace('frames = "1-12"', 'frames = "1-20"'))
    wider = submit_embedded(root, agents=2)
    assert wider.ok, wider.failures
    assert wider.reused == len(before)  # the first 12 frames' jobs, as they were cut
    assert wider.done - wider.reused >= 1
    sizes = job_sizes(root)
    assert set(before) <= set(sizes)
    got = sorted(p.name for p in (root / "output" / "frames").glob("frame_*.png"))
    assert got == [f"frame_{n:06d}.png" for n in iter_frames(parse_frames("1-20"))]
