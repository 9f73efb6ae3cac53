"""Helpers for the audio tests: a whole run rendered in-process as one worker would, and the
whole-file ffmpeg run its outputs must equal."""

from __future__ import annotations

from pathlib import Path

from farm_audio import ffmpeg
from farm_audio.encode import Output
from farm_audio.render import whole_file_filter

from farm.mediatype import CollateContext, RenderContext
from farm.plugins import get_plugins
from farm.project import Project


def render_all(project: Project, scratch: Path, skip: str = "") -> list[Path]:
    """Every job rendered as one worker would (one cache for its life), collated (but ``skip``),
    finalized; returns the outputs."""
    media = get_plugins().get("audio")
    ctx = CollateContext(project, project.output_dir, {})
    cache: dict = {}
    for n, job in enumerate(media.split(project)):
        out, work = scratch / f"out-{n}", scratch / f"work-{n}"
        out.mkdir(parents=True)
        work.mkdir(parents=True)
        result = media.render(job, RenderContext(project.root, out, work, project.settings, 1, cache, {}))
        if job.key != skip:
            media.collate(job, result, {p.name: p for p in out.iterdir()}, ctx)
    return media.finalize(ctx)


def whole_file(project: Project, output: dict, target: Path) -> bytes:
    """The bytes one whole-file ffmpeg run writes for ``output`` (a settings ``outputs`` entry)."""
    out = Output.from_wire(output)
    ffmpeg.run(["-y", "-i", str(project.root / project.settings["input"]), "-map", "0:a:0",
                "-af", whole_file_filter(project.settings), *out.args, *ffmpeg.BITEXACT, str(target)])
    return target.read_bytes()
