"""A frames run removes the video and contact sheet an earlier run recorded writing and it did
not write again (another codec's video after ``[video] codec`` changed), so nothing in the
output folder looks like this run's video when it is not; a file farm did not write there, or
one the user changed since, stays, also after a failed run (which names it).

The fast tests collate frames made by ffmpeg (no Blender), as `tests/test_frames_failed_run.py`
does; the last runs real Blender on an embedded farm, once with h264 and once with vp9.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from farm_frames.ffmpeg import probe_video
from farm_frames.media import RECORD
from test_frames import blender, collate_all, media, write_project  # noqa: F401

from farm.embedded import submit_embedded
from farm.errors import RenderError
from farm.mediatype import CollateContext
from farm.project import STATE_DIR

MP4, WEBM, SHEET = "tiny_turntable.mp4", "tiny_turntable.webm", "tiny_turntable-contact.png"


def encode(root: Path, staged: Path, codec: str) -> list[str]:
    """A good run of the project at ``root`` with ``codec``, frames made by ffmpeg; its outputs' names."""
    write_project(root, frames="1-4", frames_extra="chunk = 2", video=f'codec = "{codec}"')
    return [p.name for p in media().finalize(collate_all(root, staged, "forward"))]


def listing(output: Path) -> list[str]:
    return sorted(p.name for p in output.iterdir())


def notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_codec_change_removes_the_earlier_codecs_video_and_says_so(tmp_path, caplog):
    root = tmp_path / "p"
    output = root / "output"
    assert encode(root, tmp_path / "s1", "h264") == [MP4, SHEET]
    (output / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING):
        assert encode(root, tmp_path / "s2", "vp9") == [WEBM, SHEET]
    assert listing(output) == sorted(["frames", "notes.txt", SHEET, WEBM])
    assert probe_video(output / WEBM).frames == 4
    assert notes(caplog) == [f"tiny turntable: removed {MP4}: an earlier run of this project wrote it, "
                             f"and this run does not (its outputs: {SHEET}, {WEBM})"]
    assert (root / STATE_DIR / RECORD).is_file()

    caplog.clear()  # back to h264: the vp9 run's video goes, and nothing else is said
    with caplog.at_level(logging.WARNING):
        assert encode(root, tmp_path / "s3", "h264") == [MP4, SHEET]
    assert listing(output) == sorted(["frames", "notes.txt", MP4, SHEET])
    assert len(notes(caplog)) == 1 and notes(caplog)[0].startswith(f"tiny turntable: removed {WEBM}:")

    caplog.clear()  # the same codec again: nothing to remove, nothing said
    with caplog.at_level(logging.WARNING):
        assert encode(root, tmp_path / "s4", "h264") == [MP4, SHEET]
    assert notes(caplog) == []


def test_a_video_the_user_changed_or_made_stays_and_a_renamed_project_removes_the_rest(tmp_path, caplog):
    root = tmp_path / "p"
    output = root / "output"
    output.mkdir(parents=True)
    (output / WEBM).write_bytes(b"a webm I made before farm ran")  # no run recorded it
    assert encode(root, tmp_path / "s1", "h264") == [MP4, SHEET]
    assert (output / WEBM).read_bytes() == b"a webm I made before farm ran"
    mp4 = output / MP4
    size = mp4.stat().st_size
    mp4.write_bytes(b"x" * size)  # same size, a later modification time: the user's now
    os.utime(mp4, ns=(mp4.stat().st_atime_ns, mp4.stat().st_mtime_ns + 1_000_000_000))

    toml = root / "farm.toml"
    toml.write_text(toml.read_text().replace('name = "tiny turntable"', 'name = "spin"'))
    ctx = collate_all(root, tmp_path / "s2", "forward")
    with caplog.at_level(logging.WARNING):
        assert [p.name for p in media().finalize(ctx)] == ["spin.mp4", "spin-contact.png"]
    assert listing(output) == sorted(["frames", "spin.mp4", "spin-contact.png", MP4, WEBM])
    assert mp4.read_bytes() == b"x" * size
    assert notes(caplog) == [f"spin: removed {SHEET}: an earlier run of this project wrote it, and this run "
                             "does not (its outputs: spin-contact.png, spin.mp4)"]


def test_a_failed_run_removes_only_what_a_run_recorded_and_names_what_it_kept(tmp_path, caplog):
    """The earlier run's video and contact sheet go; a webm the user made stays, and the warning
    says so (it looks like a video of this project, but no run wrote it)."""
    root = tmp_path / "p"
    output = root / "output"
    assert encode(root, tmp_path / "s1", "h264") == [MP4, SHEET]
    (output / WEBM).write_bytes(b"a webm I made")
    good = collate_all(root, tmp_path / "s2", "forward")
    failed = CollateContext(good.project, good.output_dir, {}, good.log, frozenset({"frames-000001-000002"}),
                            frozenset({"frames-000003-000004"}))
    with caplog.at_level(logging.WARNING):
        assert media().finalize(failed) == []
    assert listing(output) == ["frames", WEBM]
    assert (output / WEBM).read_bytes() == b"a webm I made"
    (said,) = [n for n in notes(caplog) if "no video" in n]
    assert (f"frames 3-4 failed (1 of 2 jobs), removed the earlier run's {SHEET}, {MP4}; kept {WEBM}: "
            "no earlier run recorded writing it, or it changed since; the frames that rendered") in said, said


def test_a_finalize_that_fails_removes_the_recorded_outputs_and_keeps_the_users(tmp_path, caplog):
    """Frames 5-6 are not this run's (no done job made them): no video, the earlier run's go."""
    root = tmp_path / "p"
    output = root / "output"
    assert encode(root, tmp_path / "s1", "h264") == [MP4, SHEET]
    (output / WEBM).write_bytes(b"a webm I made")
    write_project(root, frames="1-6", frames_extra="chunk = 2")
    ctx = collate_all(root, tmp_path / "s2", "forward")
    partial = CollateContext(ctx.project, ctx.output_dir, {}, ctx.log,
                             frozenset({"frames-000001-000002", "frames-000003-000004"}))
    unmade = "no job of this run made frames 5-6"
    with caplog.at_level(logging.WARNING), pytest.raises(RenderError, match=unmade):
        media().finalize(partial)
    assert listing(output) == ["frames", WEBM]
    assert notes(caplog) == [f"tiny turntable: no video or contact sheet, removed the earlier run's {SHEET}, "
                             f"{MP4}; kept {WEBM}: no earlier run recorded writing it, or it changed since"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_embedded_farm_a_codec_change_leaves_only_this_runs_video(blender, tmp_path):  # noqa: F811
    root = write_project(tmp_path / "p", frames="1-2")
    output = root / "output"
    first = submit_embedded(root, agents=1)
    assert first.ok, first.failures
    assert {Path(o).name for o in first.outputs} == {MP4, SHEET}

    write_project(root, frames="1-2", video='codec = "vp9"')
    second = submit_embedded(root, agents=1)
    assert second.ok, second.failures
    assert {Path(o).name for o in second.outputs} == {WEBM, SHEET}
    assert listing(output) == sorted(["frames", SHEET, WEBM])  # not the h264 run's video, looking current
    assert probe_video(output / WEBM).frames == 2
    assert second.notes == [f"tiny turntable: removed {MP4}: an earlier run of this project wrote it, "
                            f"and this run does not (its outputs: {SHEET}, {WEBM})"], second.notes
