"""Helpers for the audio tests: a whole run rendered in-process as one worker would, and the
whole-file ffmpeg run its outputs must equal."""

from __future__ import annotations

from pathlib import Path

from farm_audio import ffmpeg
from farm_audio.encode import Output
from farm_audio.render import whole_file_filter

from farm.mediatype import CollateContext, Job, RenderContext
from farm.plugins import get_plugins
from farm.project import Project

Rendered = dict[str, tuple[Job, dict, dict[str, Path]]]  # key -> (job, result, its files by name)


def write_project(root: Path, audio: str, signal: str, seconds: float, rate: int = 48000) -> Path:
    """A project at ``root``: ``source.flac``, ``seconds`` of ffmpeg's ``aevalsrc`` expression
    ``signal`` (made once), and a farm.toml whose ``[audio]`` reads it, then ``audio`` (TOML lines)."""
    root.mkdir(parents=True, exist_ok=True)
    source = root / "source.flac"
    if not source.exists():
        ffmpeg.run(["-f", "lavfi", "-i", f"aevalsrc=exprs='{signal}':s={rate}:d={seconds}", "-c:a", "flac",
                    str(source)])
    (root / "farm.toml").write_text(f'[project]\nname = "t"\nmedia_type = "audio"\n\n[audio]\n'
                                    f'input = "source.flac"\n{audio}')
    return root


def render_jobs(project: Project, scratch: Path) -> Rendered:
    """Every job rendered as one worker would (one cache for its life), not collated."""
    media = get_plugins().get("audio")
    cache: dict = {}
    rendered: Rendered = {}
    for n, job in enumerate(media.split(project)):
        out, work = scratch / f"out-{n}", scratch / f"work-{n}"
        out.mkdir(parents=True)
        work.mkdir(parents=True)
        result = media.render(job, RenderContext(project.root, out, work, project.settings, 1, cache, {}))
        rendered[job.key] = (job, result, {p.name: p for p in out.iterdir()})
    return rendered


def render_all(project: Project, scratch: Path, skip: str = "") -> list[Path]:
    """Every job rendered (`render_jobs`), collated (but ``skip``), finalized; returns the outputs."""
    media = get_plugins().get("audio")
    ctx = CollateContext(project, project.output_dir, {})
    for key, (job, result, files) in render_jobs(project, scratch).items():
        if key != skip:
            media.collate(job, result, files, ctx)
    return media.finalize(ctx)


def whole_file(project: Project, output: dict, target: Path) -> bytes:
    """The bytes one whole-file ffmpeg run writes for ``output`` (a settings ``outputs`` entry)."""
    out = Output.from_wire(output)
    ffmpeg.run(["-y", "-i", str(project.root / project.settings["input"]), "-map", "0:a:0",
                "-af", whole_file_filter(project.settings), *out.args, *ffmpeg.BITEXACT, str(target)])
    return target.read_bytes()
