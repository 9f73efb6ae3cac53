"""An audio run that cannot finish leaves no scratch files: the joins (``output/.NAME.join.FMT``,
as large as the decoded audio) and their range records go with every way finalize fails.

A run with jobs that failed for good keeps them while its state lives, because `farm retry`
runs those jobs again and the next finalize needs the ranges already joined; they go when the
run's state is dropped or the process exits (`farm submit` ends). Real ffmpeg, a real
embedded farm for the case, a real controller and agent for `farm retry`.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
from audio_helpers import Rendered, render_jobs, whole_file
from conftest import wait_for
from control_helpers import EventLog
from farm_audio import ffmpeg
from test_audio_cases import case_copy
from test_audio_cases import submit as farm_submit_cli

from farm.client import Client, submit
from farm.errors import RenderError
from farm.mediatype import CollateContext
from farm.plugins import get_plugins
from farm.project import Project, load_project


def hidden(output: Path) -> list[str]:
    """The scratch files an audio run may leave: hidden joins, ranges, records, partial encodes."""
    return sorted(p.name for p in output.glob(".*")) if output.is_dir() else []


@pytest.fixture(scope="module")
def loudnorm_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return case_copy(tmp_path_factory.mktemp("cases"), "audio-loudnorm-silent-and-hot")


@pytest.mark.parametrize(("case", "fix"), [("hotter", 'filters = "volume='),
                                           ("silent", "the input is silent")])
def test_the_case_fails_with_its_reason_once_and_leaves_no_join(
    loudnorm_case: Path, case: str, fix: str
) -> None:
    done = farm_submit_cli(loudnorm_case / case)
    assert done.returncode == 1, done.stderr
    assert fix in done.stdout + done.stderr
    assert hidden(loudnorm_case / case / "output") == []  # was .src.join.f64le (3.8 MB) and its .ranges
    # the run's own error says why; the finalize that cannot start says nothing more, no repr
    assert "finalize of a partial run failed" not in done.stderr, done.stderr
    assert "RenderError(" not in done.stdout + done.stderr


def make_project(root: Path, seconds: int = 2, name: str = "t") -> Project:
    """A sine of ``seconds`` in 0.5 s segments, encoded to FLAC and MP3 (two streams)."""
    root.mkdir()
    ffmpeg.run(["-y", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
                "-c:a", "flac", str(root / "source.flac")])
    (root / "farm.toml").write_text(f'[project]\nname = "{name}"\nmedia_type = "audio"\n\n[audio]\n'
                                    'input = "source.flac"\nfilters = "highpass=f=100"\nsegment = 0.5\n'
                                    'outputs = ["flac", "mp3"]\n')
    return load_project(root)


def collate(ctx: CollateContext, rendered: Rendered, keys: list[str]) -> None:
    media = get_plugins().get("audio")
    for key in keys:
        job, result, files = rendered[key]
        media.collate(job, result, files, ctx)


def assert_whole_file_bytes(project: Project, outputs: list[Path], tmp_path: Path) -> None:
    assert len(outputs) == len(project.settings["outputs"])
    for path, wire in zip(outputs, project.settings["outputs"], strict=True):
        assert path.read_bytes() == whole_file(project, wire, tmp_path / f"whole-{path.name}"), path.name


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path / "p")


@pytest.fixture
def rendered(project: Project, tmp_path: Path) -> Rendered:
    return render_jobs(project, tmp_path / "worker")


def test_a_run_missing_a_segment_with_nothing_to_retry_removes_its_joins(
    project: Project, rendered: Rendered
) -> None:
    media = get_plugins().get("audio")
    ctx = CollateContext(project, project.output_dir, {})
    collate(ctx, rendered, [k for k in rendered if k != "segment-00002"])
    assert any(".join." in name for name in hidden(project.output_dir))  # the joins filled
    with pytest.raises(RenderError, match=r"cannot finish source: samples \d+-\d+ never arrived"):
        media.finalize(ctx)
    assert hidden(project.output_dir) == []  # joins, ranges, the encoder's .part files


def test_a_failed_segment_keeps_the_joins_for_a_retry_which_then_finishes(
    project: Project, rendered: Rendered, tmp_path: Path
) -> None:
    media = get_plugins().get("audio")
    ctx = CollateContext(project, project.output_dir, {}, failed=frozenset({"segment-00002"}))
    collate(ctx, rendered, [k for k in rendered if k != "segment-00002"])
    assert media.finalize(ctx) == []  # the failed job's own error says why; no second one
    assert any(".join." in n for n in hidden(project.output_dir))
    ctx.failed = frozenset()  # `farm retry`: the job runs again, is collated, and the run finalizes again
    collate(ctx, rendered, ["segment-00002"])
    assert_whole_file_bytes(project, media.finalize(ctx), tmp_path)
    assert [n for n in hidden(project.output_dir) if ".finished." not in n] == []  # joins, .part files
    ctx.state.clear()  # as the controller does once the run's end is journaled: the outputs' record goes
    assert hidden(project.output_dir) == []


def test_a_failed_runs_joins_go_when_its_state_is_dropped(project: Project, rendered: Rendered) -> None:
    media = get_plugins().get("audio")
    ctx = CollateContext(project, project.output_dir, {}, failed=frozenset({"segment-00001"}))
    collate(ctx, rendered, [k for k in rendered if k != "segment-00001"])
    assert media.finalize(ctx) == []
    assert hidden(project.output_dir)
    del ctx  # the controller drops the finished run (or exits)
    gc.collect()
    assert hidden(project.output_dir) == []


def test_a_later_run_that_took_the_joins_over_keeps_them_when_the_failed_one_is_dropped(
    project: Project, rendered: Rendered, tmp_path: Path
) -> None:
    media = get_plugins().get("audio")
    failed = CollateContext(project, project.output_dir, {}, failed=frozenset({"segment-00003"}))
    collate(failed, rendered, [k for k in rendered if k != "segment-00003"])
    assert media.finalize(failed) == []
    again = CollateContext(project, project.output_dir, {})  # submitted again: resumes the joins
    collate(again, rendered, ["segment-00003"])
    del failed
    gc.collect()
    assert any(".join." in n for n in hidden(project.output_dir))
    assert_whole_file_bytes(project, media.finalize(again), tmp_path)  # with the failed run's ranges
    assert [n for n in hidden(project.output_dir) if ".finished." not in n] == []
    again.state.clear()  # journaled
    assert hidden(project.output_dir) == []


FAIL_ONCE = """#!/bin/bash
# the real ffmpeg, but the render of segment-00002 fails the first time (then leaves a mark)
case "$*" in *segment-00002.*)
    if [ ! -e "{mark}" ]; then touch "{mark}"; echo "injected failure" >&2; exit 1; fi;;
esac
exec "{ffmpeg}" "$@"
"""


def test_farm_retry_of_a_failed_segment_finishes_from_the_kept_joins(
    controller, agents, project: Project, tmp_path: Path
) -> None:
    """Real controller and agent: the segment fails for good, the run fails keeping its joins;
    `farm retry` renders that segment alone and the run finishes, its joins gone."""
    wrapper = tmp_path / "ffmpeg-fail-once"
    wrapper.write_text(FAIL_ONCE.format(mark=tmp_path / "failed-once", ffmpeg=ffmpeg.ffmpeg_exe()))
    wrapper.chmod(0o755)
    with (project.root / "farm.toml").open("a") as toml:
        toml.write("\n[jobs]\nmax_attempts = 1\n")
    log = EventLog(controller)
    agents(controller.url, 1, env={ffmpeg.FFMPEG_ENV: str(wrapper)})
    summary = submit(controller.url, load_project(project.root))
    assert summary.state == "failed" and [f["job"] for f in summary.failures] == ["segment-00002"]
    assert any(".join." in n for n in hidden(project.output_dir))  # kept: the retry needs them
    with Client(controller.url) as client:
        assert client.retry(summary.id)["retried"] == ["segment-00002"]
    wait_for(lambda: len(log.of("run.finished", summary.id)) >= 2, 120, "the retried run to finish")
    finished = log.of("run.finished", summary.id)[-1]
    assert finished.data["state"] == "done", finished.data
    assert sorted(p.name for p in project.output_dir.iterdir()) == ["source.flac", "source.mp3"]
    assert_whole_file_bytes(project, [project.output_dir / "source.flac", project.output_dir / "source.mp3"],
                            tmp_path)


def test_a_cancelled_run_keeps_its_joins_and_the_next_submit_takes_them_over(
    controller, agents, tmp_path: Path
) -> None:
    """The plugin is not told of a cancel: the joins stay (docs/media-audio.md, step 7); the
    same project submitted again continues from them, finishes, and leaves no scratch file."""
    root = tmp_path / "long"
    project = make_project(root, seconds=60, name="long")
    agents(controller.url, 1)
    first: list = []
    thread = threading.Thread(target=lambda: first.append(submit(controller.url, project)), daemon=True)
    thread.start()
    wait_for(lambda: any(".join." in n for n in hidden(project.output_dir)), 120, "the first segment joined")
    with Client(controller.url) as client:
        cancelled = client.cancel("long")
    thread.join(60)
    assert cancelled.state == "cancelled" and cancelled.done < 120, cancelled
    assert any(".join." in n for n in hidden(project.output_dir))
    again = submit(controller.url, load_project(root))
    assert again.state == "done", again
    assert sorted(p.name for p in project.output_dir.iterdir()) == ["source.flac", "source.mp3"]
    assert_whole_file_bytes(project, [project.output_dir / "source.flac", project.output_dir / "source.mp3"],
                            tmp_path)
