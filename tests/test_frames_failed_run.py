"""A frames run encodes only frames its own done jobs made: a run with a failed job makes no
video or contact sheet and removes an earlier run's (those it recorded writing), and keeps the
frames that did render.

The fast tests collate frames made by ffmpeg (no Blender); the last runs real Blender on an
embedded farm, once well and once with a job that fails.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import mapnik
import pytest
from farm_frames.ffmpeg import ffmpeg_exe, probe_video
from farm_frames.images import check_image
from farm_frames.media import key_runs
from test_frames import blender, collate_all, media, write_project  # noqa: F401

from farm.embedded import submit_embedded
from farm.errors import RenderError
from farm.mediatype import CollateContext

VIDEO, SHEET = "tiny_turntable.mp4", "tiny_turntable-contact.png"


def _finalized(root: Path, staged: Path) -> tuple[CollateContext, list[Path]]:
    """A good run of ``root`` with frames made by ffmpeg: its context and outputs."""
    ctx = collate_all(root, staged, "forward")
    return ctx, media().finalize(ctx)


def _with(ctx: CollateContext, *, done: set[str], failed: set[str]) -> CollateContext:
    return CollateContext(ctx.project, ctx.output_dir, {}, ctx.log, frozenset(done), frozenset(failed))


def test_a_job_key_names_the_listed_frames_between_its_first_and_last():
    listed = [[1, 3], [7, 7], [10, 12]]
    assert key_runs("frames-000003-000010", listed) == [[3, 3], [7, 7], [10, 10]]
    assert key_runs("frames-000001-000002", listed) == [[1, 2]]
    assert key_runs("tiles-1", listed) == []


@pytest.mark.parametrize("failed", [{"frames-000003-000004"}, "all"])
def test_a_run_with_failed_jobs_removes_the_earlier_video_and_keeps_the_frames(tmp_path, caplog, failed):
    root = write_project(tmp_path / "p", frames="1-6", frames_extra="chunk = 2")
    good, outputs = _finalized(root, tmp_path / "staged")
    output = root / "output"
    assert [p.name for p in outputs] == [VIDEO, SHEET]
    (output / "tiny_turntable.webm").write_bytes(b"a webm the user made")  # no run recorded it: it stays
    frames = {p.name: p.read_bytes() for p in (output / "frames").iterdir()}
    keys = set(good.done)
    failed = keys if failed == "all" else failed
    with caplog.at_level(logging.WARNING):
        assert media().finalize(_with(good, done=keys - failed, failed=failed)) == []
    assert sorted(p.name for p in output.iterdir()) == ["frames", "tiny_turntable.webm"]  # no video, no sheet
    assert {p.name: p.read_bytes() for p in (output / "frames").iterdir()} == frames
    said = [r.getMessage() for r in caplog.records if "no video" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    ranges = "1-6" if failed == keys else "3-4"
    assert f"frames {ranges} failed ({len(failed)} of 3 jobs)" in said[0]
    assert f"removed the earlier run's {SHEET}, {VIDEO}; kept tiny_turntable.webm" in said[0], said


def test_frames_no_done_job_made_are_not_encoded(tmp_path):
    """Frames 5-6 lie on disk (an earlier run) but no job of this run made them: no video."""
    root = write_project(tmp_path / "p", frames="1-6", frames_extra="chunk = 2")
    good, _ = _finalized(root, tmp_path / "staged")
    partial = _with(good, done={"frames-000001-000002", "frames-000003-000004"}, failed=set())
    with pytest.raises(RenderError, match=r"no job of this run made frames 5-6"):
        media().finalize(partial)
    assert not (root / "output" / VIDEO).exists() and not (root / "output" / SHEET).exists()


def test_a_moved_range_encodes_only_its_own_frames(tmp_path):
    """Frames 1-6, then 4-9: frames 1-3 stay in the folder and the video starts at frame 4."""
    _finalized(write_project(tmp_path / "p", frames="1-6", frames_extra="chunk = 2"), tmp_path / "s1")
    moved = write_project(tmp_path / "p", frames="4-9", frames_extra="chunk = 2")
    video, _ = media().finalize(collate_all(moved, tmp_path / "s2", "forward"))
    assert len(list((moved / "output" / "frames").iterdir())) == 9
    assert probe_video(video).frames == 6
    first = tmp_path / "first.png"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), "-vf", "format=rgb24,crop=33:19:0:0",
                    "-frames:v", "1", str(first)], check=True)
    decoded = mapnik.Image.open(str(first))
    differing = {n: decoded.compare(mapnik.Image.open(str(moved / "output" / "frames" / f"frame_{n:06d}.png")), 16)
                 for n in (3, 4, 5)}
    assert min(differing, key=differing.get) == 4, differing


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_failed_blender_job_leaves_no_video_and_keeps_the_rendered_frames(blender, tmp_path, caplog):  # noqa: F811
    root = write_project(tmp_path / "p", frames="1-4", frames_extra="chunk = 2",
                         tail="\n[jobs]\nmax_attempts = 1\n")
    first = submit_embedded(root, agents=1)
    output = root / "output"
    assert first.ok, first.failures
    assert {Path(o).name for o in first.outputs} == {VIDEO, SHEET}
    before = {n: (output / "frames" / f"frame_{n:06d}.png").stat().st_mtime_ns for n in (1, 2)}
    # Blender exits while rendering frame 3: the job of frames 3-4 fails, 1-2 renders
    exits = """
        import os
        def _exit_at_3(scene, *args):
            if scene.frame_current >= 3:
                print("farm-test: exiting at frame", scene.frame_current, flush=True)
                os._exit(3)
        bpy.app.handlers.render_pre.append(_exit_at_3)
    """
    write_project(root, frames="1-4", frames_extra="chunk = 2", scene_extra=exits,
                  tail="\n[jobs]\nmax_attempts = 1\n")
    with caplog.at_level(logging.WARNING, logger="farm.collate.frames"):
        second = submit_embedded(root, agents=1)
    assert not second.ok and (second.done, second.failed) == (1, 1), second
    assert [f["job"] for f in second.failures] == ["frames-000003-000004"]
    assert not (output / VIDEO).exists() and not (output / SHEET).exists()
    assert not {Path(o).name for o in second.outputs} & {VIDEO, SHEET}
    said = [r.getMessage() for r in caplog.records if "no video" in r.getMessage()]
    assert len(said) == 1 and "frames 3-4 failed" in said[0], said
    for n in (1, 2):  # rendered again by this run, and whole
        frame = output / "frames" / f"frame_{n:06d}.png"
        assert frame.stat().st_mtime_ns > before[n]
        check_image(frame, "png")
