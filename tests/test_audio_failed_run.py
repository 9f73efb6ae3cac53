"""An audio run with a job that failed for good encodes nothing and removes the final outputs an
earlier run recorded writing (they would look like this run's); it keeps every other file
of the output folder, and one warning names the failed audio in seconds and samples.

Real ffmpeg: in-process collates for the cases, then a real embedded farm whose agents run an
ffmpeg that fails one segment's render (`FAIL_SEGMENT`), and a later run that writes the
outputs again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from audio_helpers import Rendered, render_jobs, whole_file, write_project
from farm_audio import ffmpeg
from farm_audio.render import ANALYSIS_KEY

from farm.cli.progress import summary_text
from farm.embedded import submit_embedded
from farm.mediatype import CollateContext
from farm.plugins import get_plugins
from farm.project import Project, load_project

RATE = 48000
SIGNAL = "0.5*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*1.7*t))*gt(mod(t,0.9),0.25)+0.02*sin(2*PI*3170*t*t)"
#: not audio's final outputs, though some look close: a failed run leaves them alone
OTHERS = {"notes.txt": b"mine", "other.mp3": b"another mp3", "t.flac.bak": b"a copy",
          "t-edit.wav": b"an edit", "t.loudnorm.txt": b"notes", "sub/t.flac": b"in a folder"}


def make_project(root: Path, filters: str, extra: str = "") -> Path:
    """4 s of a tone with swells in 0.5 s segments (samples 0-24000, 24000-48000, ...)."""
    table = f'filters = "{filters}"\nsegment = 0.5\noutputs = ["flac", "mp3"]\nname = "t"\n{extra}'
    return write_project(root, table, SIGNAL, 4, RATE)


def plant_others(output: Path) -> None:
    for name, data in OTHERS.items():
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_bytes(data)


def visible(output: Path) -> dict[str, bytes]:
    """The output folder's files (not the hidden scratch files), by path inside it."""
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted(output.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "nothing encoded" in r.getMessage()]


def finalize_without(project: Project, rendered: Rendered, failed: set[str]) -> list[Path]:
    """A run whose ``failed`` jobs failed for good: the others collated, then finalize."""
    media = get_plugins().get("audio")
    ctx = CollateContext(project, project.output_dir, {}, failed=frozenset(failed),
                         done=frozenset(set(rendered) - failed))
    for key, (job, result, files) in rendered.items():
        if key not in failed:
            media.collate(job, result, files, ctx)
    return media.finalize(ctx)


@pytest.mark.parametrize(("failed", "said"), [
    ({"segment-00002"}, "the audio at 1-1.5 s (samples 48000-72000) failed (1 of 9 jobs)"),
    ({"segment-00001", "segment-00002"}, "the audio at 0.5-1.5 s (samples 24000-72000) failed (2 of 9 jobs)"),
    ({"segment-00000", "segment-00003"},
     "the audio at 0-0.5 s, 1.5-2 s (samples 0-24000, 72000-96000) failed (2 of 9 jobs)"),
    ({ANALYSIS_KEY}, "loudnorm's analysis failed (1 of 9 jobs)"),
])
def test_a_failed_run_removes_the_earlier_outputs_and_keeps_other_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, failed: set[str], said: str
) -> None:
    project = load_project(make_project(tmp_path / "p", "highpass=f=80,loudnorm=I=-20:TP=-1:LRA=15"))
    rendered = render_jobs(project, tmp_path / "worker")
    media = get_plugins().get("audio")
    output = project.output_dir
    good = CollateContext(project, output, {})
    for job, result, files in rendered.values():
        media.collate(job, result, files, good)
    earlier = media.finalize(good)
    assert sorted(p.name for p in earlier) == ["t.flac", "t.loudnorm.json", "t.mp3"]
    good.state.clear()  # its end is journaled
    (output / "t.wav").write_bytes(b"a wav the user made")  # no run recorded it: it stays, named
    plant_others(output)
    analysis = (output / "t.loudnorm.json").read_bytes()
    with caplog.at_level(logging.WARNING):
        assert finalize_without(project, rendered, failed) == []
    kept = {**OTHERS, "t.wav": b"a wav the user made"}
    if ANALYSIS_KEY not in failed:  # this run's own analysis, collated again
        kept["t.loudnorm.json"] = analysis
    assert visible(output) == kept
    (line,) = warnings(caplog)
    assert "\n" not in line and said in line, line
    removed = ["t.flac", *(["t.loudnorm.json"] if ANALYSIS_KEY in failed else []), "t.mp3"]
    assert line.endswith(f"removed the earlier run's {', '.join(removed)}; kept t.wav: no earlier run "
                         "recorded writing it, or it changed since"), line


def test_a_failed_run_with_no_earlier_outputs_says_so_and_removes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = load_project(make_project(tmp_path / "p", "highpass=f=80"))
    rendered = render_jobs(project, tmp_path / "worker")
    project.output_dir.mkdir()
    plant_others(project.output_dir)
    with caplog.at_level(logging.WARNING):
        assert finalize_without(project, rendered, {"segment-00003"}) == []
    assert visible(project.output_dir) == OTHERS
    (line,) = warnings(caplog)
    assert line == "t: nothing encoded: the audio at 1.5-2 s (samples 72000-96000) failed (1 of 8 jobs)", line


# the real ffmpeg, but every render of segment-00002 fails
FAIL_SEGMENT = """#!/bin/bash
case "$*" in *segment-00002.*) echo "injected failure" >&2; exit 1;; esac
exec "{ffmpeg}" "$@"
"""


@pytest.mark.slow  # three runs of a controller and two agents: a few seconds each
@pytest.mark.timeout(300)
def test_embedded_farm_a_failed_segment_removes_the_earlier_outputs_and_a_fixed_run_writes_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "p", "highpass=f=80")
    output = root / "output"
    first = submit_embedded(root, agents=2)
    assert first.ok, first.failures
    assert sorted(Path(p).name for p in first.outputs) == ["t.flac", "t.mp3"]
    plant_others(output)

    wrapper = tmp_path / "ffmpeg-fails-segment-2"
    wrapper.write_text(FAIL_SEGMENT.format(ffmpeg=ffmpeg.ffmpeg_exe()))
    wrapper.chmod(0o755)
    monkeypatch.setenv(ffmpeg.FFMPEG_ENV, str(wrapper))  # the agents' workers run it
    make_project(root, "highpass=f=120", "\n[jobs]\nmax_attempts = 1\n")  # new settings: rendered anew
    with caplog.at_level(logging.WARNING):
        second = submit_embedded(root, agents=2)
    assert not second.ok and (second.done, second.failed) == (7, 1), second
    assert [f["job"] for f in second.failures] == ["segment-00002"]
    assert second.outputs == []
    assert visible(output) == OTHERS  # t.flac and t.mp3 of the first run are gone
    (line,) = warnings(caplog)
    assert line == ("t: nothing encoded: the audio at 1-1.5 s (samples 48000-72000) failed (1 of 8 jobs), "
                    "removed the earlier run's t.flac, t.mp3"), line
    assert second.notes == [line], second.notes  # the summary says it too: a remote submitter sees it
    said = summary_text(second).splitlines()[-1]  # not "outputs in DIR", as if they were there
    assert said == f"no finished outputs (jobs failed); what was collated is in {output}", said

    monkeypatch.delenv(ffmpeg.FFMPEG_ENV)
    third = submit_embedded(root, agents=2)  # the same settings: the 7 segments that rendered are reused
    assert third.ok, third.failures
    assert sorted(Path(p).name for p in third.outputs) == ["t.flac", "t.mp3"]
    project = load_project(root)
    for wire in project.settings["outputs"]:
        name = f"t.{wire['extension']}"
        assert (output / name).read_bytes() == whole_file(project, wire, tmp_path / f"whole-{name}"), name
    assert {n: d for n, d in visible(output).items() if n in OTHERS} == OTHERS


# the real ffmpeg, but the encoder of the final outputs (writing .t.<ext>.part) fails
FAIL_ENCODER = """#!/bin/bash
case "$*" in *.part*) echo "injected encoder failure" >&2; exit 1;; esac
exec "{ffmpeg}" "$@"
"""


@pytest.mark.slow  # two runs of a controller and two agents
@pytest.mark.timeout(300)
def test_embedded_farm_an_encoder_that_fails_removes_the_earlier_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "p", "highpass=f=80")
    output = root / "output"
    assert submit_embedded(root, agents=2).ok
    plant_others(output)
    wrapper = tmp_path / "ffmpeg-fails-encoder"
    wrapper.write_text(FAIL_ENCODER.format(ffmpeg=ffmpeg.ffmpeg_exe()))
    wrapper.chmod(0o755)
    monkeypatch.setenv(ffmpeg.FFMPEG_ENV, str(wrapper))  # the controller's encoder runs it
    ffmpeg.ffmpeg_exe.cache_clear()  # this process (the embedded controller) found its ffmpeg already
    make_project(root, "highpass=f=120")  # new settings: every segment rendered, then encoded anew
    try:
        second = submit_embedded(root, agents=2)
    finally:
        monkeypatch.delenv(ffmpeg.FFMPEG_ENV)
        ffmpeg.ffmpeg_exe.cache_clear()  # later tests find the real one again
    assert not second.ok and second.outputs == [], second
    assert visible(output) == OTHERS  # not the first run's t.flac and t.mp3, looking like this run's
    assert "removed the earlier run's t.flac, t.mp3" in (second.error or ""), second
