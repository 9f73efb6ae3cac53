"""FLAC and WAV inputs are read in place: each job seeks and decodes only its own range.

Real ffmpeg throughout; every output is compared with one whole-file ffmpeg run, and
the segments' doubles with the whole-file chain's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from audio_helpers import render_all, whole_file
from farm_audio import ffmpeg
from farm_audio.source import SEEK_MARGIN, reads_in_place

from farm.errors import RenderError
from farm.mediatype import RenderContext
from farm.plugins import get_plugins
from farm.project import Project, load_project

DECODED = "once for this worker"  # farm_audio.source's log line when a worker decodes its input
#: a recursive filter, a time-based one (true timestamps), an echo with memory and a tail
CHAIN = "highpass=f=90,afade=t=in:st=0.5:d=1,aecho=0.8:0.6:40:0.3,volume=0.7"
SIGNAL = "0.4*sin(2*PI*(220+110*c)*t)*gt(mod(t,0.9),0.3)+0.05*sin(2*PI*3000*t)"


def make_input(path: Path, codec_args: list[str], channels: int, seconds: float, rate: int = 44100) -> Path:
    exprs = "|".join(SIGNAL.replace("c", str(c)) for c in range(channels))
    ffmpeg.run(["-y", "-f", "lavfi", "-i", f"aevalsrc=exprs='{exprs}':s={rate}:d={seconds}", *codec_args,
                str(path)])
    return path


def flac_project(tmp_path: Path) -> tuple[Path, Project]:
    """An audio project (0.5 s segments, no filters) on a 2 s mono FLAC: (its input, the project)."""
    root = tmp_path / "p"
    root.mkdir()
    source = make_input(root / "source.flac", ["-c:a", "flac"], 1, 2.0)
    (root / "farm.toml").write_text(
        '[project]\nname = "t"\nmedia_type = "audio"\n\n[audio]\ninput = "source.flac"\nsegment = 0.5\n')
    return source, load_project(root)


def rewrite(source: Path) -> None:
    """The same size, other content, a new mtime."""
    data = bytearray(source.read_bytes())
    data[-100] ^= 0xFF
    source.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "codec_args", "channels", "segment"), [
    ("source.wav", ["-c:a", "pcm_s16le"], 1, 0.37),
    # frames of 16384 samples: segments start in the middle of frames
    ("source.flac", ["-c:a", "flac", "-frame_size", "16384"], 2, 0.29),
    ("source.flac", ["-c:a", "flac", "-sample_fmt", "s32", "-bits_per_raw_sample", "24"], 1, 0.5),
])
def test_flac_and_wav_inputs_are_read_in_place_and_equal_the_whole_file_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, codec_args: list[str], channels: int,
    segment: float,
) -> None:
    caplog.set_level(logging.INFO, logger="farm_audio.source")
    root = tmp_path / "p"
    root.mkdir()
    make_input(root / name, codec_args, channels, 4.2)
    (root / "farm.toml").write_text(
        f'[project]\nname = "t"\nmedia_type = "audio"\n\n[audio]\ninput = "{name}"\nfilters = "{CHAIN}"\n'
        f'segment = {segment}\noutputs = ["wav:f64", "flac:24", "mp3"]\n')
    project = load_project(root)
    assert reads_in_place(project.settings)
    outputs = render_all(project, tmp_path / "worker")
    assert not [r for r in caplog.records if DECODED in r.getMessage()]  # no job decoded the whole input
    for path, output in zip(outputs, project.settings["outputs"], strict=True):
        assert path.read_bytes() == whole_file(project, output, tmp_path / f"whole-{path.name}"), path.name


def test_a_long_input_is_cut_exactly_after_a_seek(tmp_path: Path) -> None:
    """Past `SEEK_MARGIN`, ffmpeg really seeks: the cut must still land on the exact sample."""
    root = tmp_path / "p"
    root.mkdir()
    make_input(root / "source.flac", ["-c:a", "flac"], 1, 9.0, rate=48000)
    (root / "farm.toml").write_text(
        '[project]\nname = "t"\nmedia_type = "audio"\n\n[audio]\ninput = "source.flac"\n'
        f'filters = "{CHAIN}"\nsegment = 3.3\noutputs = ["wav:f64"]\n')
    project = load_project(root)
    assert project.settings["samples"] > 2 * SEEK_MARGIN
    (output,) = render_all(project, tmp_path / "worker")
    assert output.read_bytes() == whole_file(project, project.settings["outputs"][0], tmp_path / "whole.wav")


@pytest.mark.parametrize(("name", "table"), [
    ("source.mp3", ""),  # a decoder started mid-stream differs: decoded once per worker
    ("source.wav", "sample_rate = 22050\n"),  # the resampler runs over the whole file
])
def test_inputs_that_do_not_decode_alone_are_decoded_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, table: str
) -> None:
    caplog.set_level(logging.INFO, logger="farm_audio.source")
    root = tmp_path / "p"
    root.mkdir()
    codec = ["-c:a", "libmp3lame"] if name.endswith(".mp3") else ["-c:a", "pcm_s16le"]
    make_input(root / name, codec, 1, 2.5)
    (root / "farm.toml").write_text(
        f'[project]\nname = "t"\nmedia_type = "audio"\n\n[audio]\ninput = "{name}"\nfilters = "volume=0.5"\n'
        f'segment = 0.5\noutputs = ["flac"]\n{table}')
    project = load_project(root)
    assert not reads_in_place(project.settings)
    (output,) = render_all(project, tmp_path / "worker")
    assert sum(DECODED in r.getMessage() for r in caplog.records) == 1
    assert output.read_bytes() == whole_file(project, project.settings["outputs"][0], tmp_path / "whole.flac")


def test_a_flac_rewritten_after_the_project_loaded_fails_the_job_naming_it(tmp_path: Path) -> None:
    source, project = flac_project(tmp_path)
    rewrite(source)
    with pytest.raises(RenderError, match=r"source\.flac differs here from the file the project was set up"):
        render_all(project, tmp_path / "worker")


def test_a_flac_rewritten_between_two_jobs_of_a_worker_fails_the_second(tmp_path: Path) -> None:
    """Jobs read the input where it lies: one rewritten mid-run must not mix into the output."""
    source, project = flac_project(tmp_path)
    media = get_plugins().get("audio")
    first, second = list(media.split(project))[:2]
    cache: dict = {}

    def render(job, n: int) -> None:  # type: ignore[no-untyped-def]
        out, work = tmp_path / f"out-{n}", tmp_path / f"work-{n}"
        out.mkdir()
        work.mkdir()
        media.render(job, RenderContext(project.root, out, work, project.settings, 1, cache, {}))

    render(first, 1)
    rewrite(source)
    with pytest.raises(RenderError, match=r"source\.flac differs here from the file the project was set up"):
        render(second, 2)
