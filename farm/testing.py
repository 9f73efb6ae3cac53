"""Helpers for plugin authors: run a media type end to end without a farm.

`run_local` drives split, render, collate and finalize in one process, in order,
with the same contexts the farm gives them. Use it for fast plugin tests; use
`farm.embedded` (or the ``farm submit`` CLI) to run the same project on real agents.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.mediatype import CollateContext, Job, RenderContext
from farm.plugins import get_media_type
from farm.project import Project, load_project


@dataclass
class LocalRun:
    project: Project
    jobs: list[Job] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)


def run_local(path: Path | str, *, threads: int = 1, output: str | None = None) -> LocalRun:
    """Render a project in this process, job by job; raises whatever a job raises."""
    project = load_project(path, output=output)
    media = get_media_type(project.media_type)
    run = LocalRun(project)
    ctx = CollateContext(project, project.output_dir, {}, logging.getLogger("farm.collate"))
    cache: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="farm-local-") as tmp:
        for job in media.split(project):
            run.jobs.append(job)
            out_dir = Path(tmp, "out", job.key.replace("/", "_"))
            work_dir = Path(tmp, "work")
            out_dir.mkdir(parents=True)
            work_dir.mkdir(exist_ok=True)
            rctx = RenderContext(
                project_dir=project.root,
                output_dir=out_dir,
                work_dir=work_dir,
                settings=project.settings,
                threads=threads,
                cache=cache,
                deps={d: run.results.get(d) for d in job.deps},
            )
            result = media.render(job, rctx)
            run.results[job.key] = result
            outputs = {p.relative_to(out_dir).as_posix(): p for p in sorted(out_dir.rglob("*")) if p.is_file()}
            media.collate(job, result, outputs, ctx)
            shutil.rmtree(out_dir, ignore_errors=True)
            shutil.rmtree(work_dir, ignore_errors=True)
        run.outputs = media.finalize(ctx)
    return run
