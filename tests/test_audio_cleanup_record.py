"""A failed audio run (a job that failed for good, or an encoder that failed) removes only the
outputs an earlier run recorded writing (`farm_audio.dropped`'s record), if they are still the
files it wrote: a file of the user's under an output's name (``t.wav``, ``t.opus``) or an
output the user changed since stays, and the warning names it.

Real ffmpeg: 1 s of a tone in 0.5 s segments, rendered and collated in-process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from audio_helpers import render_all, render_jobs, write_project
from farm_audio import ffmpeg
from test_audio_failed_run import FAIL_ENCODER, finalize_without

from farm.errors import RenderError
from farm.mediatype import CollateContext
from farm.plugins import get_plugins
from farm.project import load_project

TONE = "0.5*sin(2*PI*440*t)"
#: files the user made under names audio's outputs have: no run recorded them
USERS = {"t.wav": b"my own wav", "t.opus": b"my own opus"}


def make_project(root: Path, name: str = "t") -> Path:
    return write_project(root, f'segment = 0.5\nname = "{name}"\noutputs = ["flac", "mp3"]\n', TONE, 1)


def visible(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in output.iterdir() if p.is_file() and not p.name.startswith(".")}


def plant(output: Path, files: dict[str, bytes]) -> None:
    output.mkdir(exist_ok=True)
    for name, data in files.items():
        (output / name).write_bytes(data)


def touched(path: Path, data: bytes) -> None:
    """``path`` rewritten with ``data`` and a later modification time: the user's now."""
    mtime = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(mtime, mtime + 1_000_000_000))


def failed_run(root: Path, scratch: Path, key: str, caplog: pytest.LogCaptureFixture) -> str:
    """A run of the project at ``root`` whose job ``key`` failed for good; its one warning."""
    project = load_project(root)
    with caplog.at_level(logging.WARNING):
        assert finalize_without(project, render_jobs(project, scratch), {key}) == []
    (line,) = [r.getMessage() for r in caplog.records if "nothing encoded" in r.getMessage()]
    return line


def test_a_failed_run_keeps_the_users_files_under_output_names_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_project(tmp_path / "p")
    output = root / "output"
    assert sorted(p.name for p in render_all(load_project(root), tmp_path / "w1")) == ["t.flac", "t.mp3"]
    plant(output, USERS)
    touched(output / "t.mp3", b"my edit of the mp3")

    line = failed_run(root, tmp_path / "w2", "segment-00001", caplog)
    assert visible(output) == {**USERS, "t.mp3": b"my edit of the mp3"}  # t.flac, unchanged, is gone
    assert line == ("t: nothing encoded: the audio at 0.5-1 s (samples 24000-48000) failed (1 of 2 jobs), "
                    "removed the earlier run's t.flac; kept t.mp3, t.opus, t.wav: no earlier run recorded "
                    "writing them, or they changed since"), line


def test_a_failed_run_with_no_record_removes_nothing_and_names_what_looks_like_an_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Files at every output name, none written by farm (no record): all stay, all named."""
    root = make_project(tmp_path / "p")
    mine = {**USERS, "t.flac": b"my flac", "t.mp3": b"my mp3"}
    plant(root / "output", mine)
    line = failed_run(root, tmp_path / "w", "segment-00000", caplog)
    assert visible(root / "output") == mine
    assert line.endswith("failed (1 of 2 jobs), kept t.flac, t.mp3, t.opus, t.wav: no earlier run recorded "
                         "writing them, or they changed since"), line


def test_an_encoder_that_fails_removes_the_recorded_outputs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "p")
    output = root / "output"
    render_all(load_project(root), tmp_path / "w1")
    plant(output, {"t.wav": b"my own wav"})
    project = load_project(root)
    rendered = render_jobs(project, tmp_path / "w2")
    wrapper = tmp_path / "ffmpeg-fails-encoder"
    wrapper.write_text(FAIL_ENCODER.format(ffmpeg=ffmpeg.ffmpeg_exe()))
    wrapper.chmod(0o755)
    monkeypatch.setenv(ffmpeg.FFMPEG_ENV, str(wrapper))
    ffmpeg.ffmpeg_exe.cache_clear()
    media = get_plugins().get("audio")
    ctx = CollateContext(project, output, {})
    try:
        for job, result, files in rendered.values():
            media.collate(job, result, files, ctx)
        with pytest.raises(RenderError) as raised:
            media.finalize(ctx)
    finally:
        monkeypatch.delenv(ffmpeg.FFMPEG_ENV)
        ffmpeg.ffmpeg_exe.cache_clear()  # later tests find the real one again
    assert visible(output) == {"t.wav": b"my own wav"}
    assert str(raised.value).endswith("; removed the earlier run's t.flac, t.mp3; kept t.wav: no earlier run "
                                      "recorded writing it, or it changed since"), raised.value


def test_a_failed_run_after_a_rename_removes_the_old_names_outputs_it_recorded(tmp_path: Path) -> None:
    """The record, not the name, says what an earlier run wrote: ``t.*`` go when a run of ``u`` fails."""
    root = make_project(tmp_path / "p")
    output = root / "output"
    render_all(load_project(root), tmp_path / "w1")
    project = load_project(make_project(root, name="u"))
    assert finalize_without(project, render_jobs(project, tmp_path / "w2"), {"segment-00001"}) == []
    assert visible(output) == {}
