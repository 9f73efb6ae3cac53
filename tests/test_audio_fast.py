"""The lean audio path: the source decoded once per worker, outputs encoded while the join fills.

Real ffmpeg throughout; every output is compared with one whole-file ffmpeg run.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from farm_audio import ffmpeg
from farm_audio.encode import Output
from farm_audio.render import whole_file_filter

from farm.errors import RenderError
from farm.mediatype import CollateContext, RenderContext
from farm.plugins import get_plugins
from farm.project import Project, load_project

RATE = 44100
DECODED = "once for this worker"  # farm_audio.source's log line when a worker decodes its input


def make_source(path: Path, expr: str, seconds: float = 3.0) -> Path:
    """A 16-bit WAV: the same length always has the same size, whatever the signal."""
    ffmpeg.run(["-y", "-f", "lavfi", "-i", f"aevalsrc=exprs='{expr}':s={RATE}:c=mono:d={seconds}",
                "-c:a", "pcm_s16le", str(path)])
    return path


def make_project(root: Path, table: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "farm.toml").write_text(
        f'[project]\nname = "t"\nmedia_type = "audio"\n\n[audio]\ninput = "source.wav"\n{table}')
    return root


def whole_file(project: Project, output: dict, target: Path) -> bytes:
    out = Output.from_wire(output)
    ffmpeg.run(["-y", "-i", str(project.root / project.settings["input"]), "-map", "0:a:0",
                "-af", whole_file_filter(project.settings), *out.args, *ffmpeg.BITEXACT, str(target)])
    return target.read_bytes()


class Worker:
    """Renders jobs as one agent worker does: one cache for its life, a fresh output folder per job."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.cache: dict = {}
        self.jobs = 0

    def render(self, project: Project, job) -> tuple[dict, dict[str, Path]]:  # type: ignore[no-untyped-def]
        self.jobs += 1
        out = self.scratch / f"out-{self.jobs}"
        work = self.scratch / f"work-{self.jobs}"
        out.mkdir(parents=True)
        work.mkdir(parents=True)
        ctx = RenderContext(project.root, out, work, project.settings, 1, self.cache, {})
        result = get_plugins().get("audio").render(job, ctx)
        return result, {p.name: p for p in out.iterdir()}


def start_run(
    tmp_path: Path, expr: str, table: str | None = None
) -> tuple[Project, Any, Worker, CollateContext]:
    """A project on a WAV of ``expr``, the media type, one worker and a fresh run's collate context."""
    root = make_project(tmp_path / "p", table or TABLE)
    make_source(root / "source.wav", expr)
    project = load_project(root)
    return project, get_plugins().get("audio"), Worker(tmp_path / "worker"), \
        CollateContext(project, project.output_dir, {})


def assert_equal_whole_file(outputs: list[Path], project: Project, tmp_path: Path) -> None:
    for path, output in zip(outputs, project.settings["outputs"], strict=True):
        assert path.read_bytes() == whole_file(project, output, tmp_path / f"whole.{path.suffix}")


def decodes(caplog: pytest.LogCaptureFixture) -> int:
    return sum(DECODED in r.getMessage() for r in caplog.records if r.name == "farm_audio.source")


TABLE = 'filters = "highpass=f=120,acompressor=threshold=0.2:ratio=4,volume=0.8"\nsegment = 0.4\n' \
        'outputs = ["flac", "mp3"]\n'
#: converted to another rate, so the worker decodes the WAV (a plain WAV or FLAC is read in place)
DECODED_TABLE = TABLE + "sample_rate = 48000\n"


def test_a_worker_decodes_its_source_once_for_all_its_segments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="farm_audio.source")
    project, media, worker, ctx = start_run(tmp_path, "0.5*sin(2*PI*330*t)*gt(mod(t,0.7),0.2)", DECODED_TABLE)
    jobs = list(media.split(project))
    assert len(jobs) == 8
    for job in jobs:
        media.collate(job, *worker.render(project, job), ctx)
    assert decodes(caplog) == 1  # eight segments, one decode
    assert_equal_whole_file(media.finalize(ctx), project, tmp_path)


def test_a_source_rewritten_between_runs_is_decoded_again_even_with_the_same_size_and_mtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="farm_audio.source")
    root = make_project(tmp_path / "p", DECODED_TABLE)
    source = make_source(root / "source.wav", "0.5*sin(2*PI*330*t)")
    media = get_plugins().get("audio")
    worker = Worker(tmp_path / "worker")  # the same worker serves both runs
    first = load_project(root)
    ctx = CollateContext(first, first.output_dir, {})
    for job in list(media.split(first))[:4]:  # the first run stops half-way: its join stays
        media.collate(job, *worker.render(first, job), ctx)
    del ctx
    stat = source.stat()
    make_source(tmp_path / "other.wav", "0.3*sin(2*PI*523*t)*gt(mod(t,0.5),0.1)")
    shutil.copy(tmp_path / "other.wav", source)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (source.stat().st_size, source.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    second = load_project(root)
    ctx = CollateContext(second, second.output_dir, {})
    for job in media.split(second):
        media.collate(job, *worker.render(second, job), ctx)
    assert decodes(caplog) == 2
    assert_equal_whole_file(media.finalize(ctx), second, tmp_path)


def test_outputs_are_encoded_while_the_join_fills(tmp_path: Path) -> None:
    project, media, worker, ctx = start_run(tmp_path, "0.5*sin(2*PI*440*t)*(0.5+0.5*sin(2*PI*2*t))")
    jobs = list(media.split(project))
    rendered = [(job, *worker.render(project, job)) for job in jobs]
    for job, result, outputs in rendered[:3]:
        media.collate(job, result, outputs, ctx)
    encoder = ctx.state["encoders"].encoder
    joined = 3 * project.settings["segment"]
    # before the last segment, the encoder has already read the three segments at the start
    wait_for(lambda: encoder.fed == joined, what="the encoder to read the first segments")
    assert encoder.proc.poll() is None
    for job, result, outputs in rendered[3:]:
        media.collate(job, result, outputs, ctx)
    assert_equal_whole_file(media.finalize(ctx), project, tmp_path)
    # no .part files, no join left; the record of the outputs stays until the run is dropped
    assert [p.name.split(".")[2] for p in project.output_dir.glob(".*")] == ["finished"]
    del ctx
    gc.collect()
    assert not list(project.output_dir.glob(".*"))


def test_a_run_that_cannot_finish_stops_its_encoders_and_leaves_no_partial_outputs(tmp_path: Path) -> None:
    project, media, worker, ctx = start_run(tmp_path, "0.5*sin(2*PI*440*t)")
    for job in media.split(project):
        if job.key != "segment-00005":
            media.collate(job, *worker.render(project, job), ctx)
    proc = ctx.state["encoders"].encoder.proc
    with pytest.raises(RenderError, match="never arrived"):
        media.finalize(ctx)
    assert proc.poll() is not None
    assert not list(project.output_dir.glob("*.part")) and not list(project.output_dir.glob(".*.part"))
    assert not list(project.output_dir.glob("*.flac")) and not list(project.output_dir.glob("*.mp3"))


def test_a_source_rewritten_with_the_same_size_after_the_project_loaded_fails_the_job(tmp_path: Path) -> None:
    project, media, worker, _ = start_run(tmp_path, "0.5*sin(2*PI*440*t)")
    source = project.root / "source.wav"
    make_source(tmp_path / "other.wav", "0.2*sin(2*PI*97*t)")
    shutil.copy(tmp_path / "other.wav", source)
    assert source.stat().st_size == project.settings["input_size"]
    job = next(media.split(project))
    with pytest.raises(RenderError, match="differs here from the file the project was set up with"):
        worker.render(project, job)


def test_a_split_verdict_found_by_one_process_is_reused_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from farm_audio import splitcheck

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(splitcheck, "_cache", splitcheck.OrderedDict())  # as in a fresh process
    root = make_project(tmp_path / "p", 'filters = "aphaser"\nsegment = 0.5\n')
    make_source(root / "source.wav", "0.5*sin(2*PI*440*t)")
    compared = []
    real_compare = splitcheck._compare
    monkeypatch.setattr(splitcheck, "_compare", lambda *a: compared.append(a) or real_compare(*a))
    assert load_project(root).settings["whole_file"]
    assert len(compared) == 1
    kept = list((tmp_path / "cache" / "farm" / "audio-verdicts").iterdir())
    assert len(kept) == 1

    caplog.set_level(logging.INFO, logger="farm_audio.config")
    caplog.clear()
    monkeypatch.setattr(splitcheck, "_cache", splitcheck.OrderedDict())  # the next process (a worker)
    assert load_project(root).settings["whole_file"]
    assert len(compared) == 1  # from disk, no ffmpeg run
    warned = [r for r in caplog.records if "does not split" in r.getMessage()]
    assert [r.levelno for r in warned] == [logging.WARNING]  # that process still says why, once

    kept[0].write_text("not a verdict")  # a damaged file is checked again and replaced
    monkeypatch.setattr(splitcheck, "_cache", splitcheck.OrderedDict())
    assert load_project(root).settings["whole_file"]
    assert len(compared) == 2
    assert '"splits": false' in kept[0].read_text()
