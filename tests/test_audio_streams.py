"""Segments move the narrowest PCM that is exact for every output: one stream per sample format
when that is narrower than doubles, and one ffmpeg encodes every output from them.

Real ffmpeg; outputs compared with one whole-file ffmpeg run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from audio_helpers import render_all, whole_file
from farm_audio import ffmpeg
from farm_audio.encode import parse_outputs, segment_streams

from farm.errors import RenderError
from farm.project import Project, load_project


@pytest.mark.parametrize(("specs", "rate", "streams"), [
    (["flac"], 48000, ["s16le"]),
    (["mp3", "opus"], 48000, ["f32le"]),
    (["flac", "mp3", "opus"], 48000, ["s16le", "f32le"]),  # 6 bytes a sample, not 8
    (["flac", "wav:24"], 48000, ["s16le", "s32le"]),
    (["flac:24", "mp3"], 48000, ["f64le"]),  # 4 + 4 bytes: no narrower than doubles
    (["flac", "wav:24", "mp3"], 48000, ["f64le"]),
    (["flac", "opus"], 44100, ["f64le"]),  # Opus resamples to 48 kHz: it must see the doubles
    (["wav:f64", "flac"], 48000, ["f64le"]),
])
def test_the_segments_streams_are_the_narrowest_exact_for_every_output(
    specs: list[str], rate: int, streams: list[str]
) -> None:
    assert segment_streams(parse_outputs(specs, rate)) == streams


def make_project(root: Path, outputs: list[str]) -> Project:
    root.mkdir()
    ffmpeg.run(["-y", "-f", "lavfi", "-i",
                "aevalsrc=exprs='0.4*sin(2*PI*330*t)*gt(mod(t,0.6),0.2)|0.3*sin(2*PI*523*t)':s=48000:d=3.1",
                "-c:a", "flac", str(root / "source.flac")])
    (root / "farm.toml").write_text(
        '[project]\nname = "t"\nmedia_type = "audio"\n\n[audio]\ninput = "source.flac"\n'
        'filters = "highpass=f=100,acompressor=threshold=0.2:ratio=3,aecho=0.8:0.5:30:0.3"\nsegment = 0.45\n'
        f"outputs = {outputs!r}\n".replace("'", '"'))
    return load_project(root)


def test_two_streams_give_every_output_the_bytes_of_a_whole_file_run(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", ["flac", "wav:f32", "mp3:96k", "opus:48k"])
    assert project.settings["streams"] == ["s16le", "f32le"]
    outputs = render_all(project, tmp_path / "worker")
    for path, wire in zip(outputs, project.settings["outputs"], strict=True):
        assert path.read_bytes() == whole_file(project, wire, tmp_path / f"whole-{path.name}"), path.name
    assert not list(project.output_dir.glob(".*"))  # no join files, no .part files left


def test_a_missing_segment_is_named_and_leaves_no_output_and_no_encoder(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", ["flac", "mp3"])
    assert len(project.settings["streams"]) == 2
    with pytest.raises(RenderError, match=r"cannot finish source: samples \d+-\d+ never arrived"):
        render_all(project, tmp_path / "worker", skip="segment-00003")
    assert not list(project.output_dir.glob("*.flac")) and not list(project.output_dir.glob("*.mp3"))
    assert not list(project.output_dir.glob(".*.part"))
