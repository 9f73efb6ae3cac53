"""Helpers for plugin authors: run a media type end to end, in one process, across the farm's boundaries.

`run_local` loads a project and drives ``split``, ``render``, ``collate`` and ``finalize``
with the same contexts the farm gives them, and with the boundaries a real farm puts between
them, so that a plugin that passes here does not fail on a farm for a reason a test could see:

- every job's params and deps, the project (its settings and its table as written), and every
  result travel through the farm's wire format (`farm.protocol.pack` / `unpack`: msgpack with
  the same limits), so a set, a tuple, bytes in a str field or a non-string map key show up;
- the "controller" loads the project as a controller does: ``configure`` with
  ``renderer_checks`` off and the renderer facts the submitter's load found (see
  `farm.mediatype.MediaType.renderer_facts`), which must give the same settings;
- ``render`` gets settings made afresh by ``configure`` from the table as written (what every
  agent worker does, its facts compared with the submitter's), runs with ``ctx.work_dir`` as
  its current directory, and gets its
  ``deps`` results as they came over the wire;
- ``count(project)`` is checked against the number of jobs ``split`` yielded, and job keys
  against duplicates and deps against keys not yielded earlier;
- jobs are collated in a seeded shuffled order, not the split order (on a farm they come back
  in any order);
- the output folder exists before the first ``collate`` and before ``finalize`` (also with no jobs);
  ``ctx.done`` holds the keys collated so far (``ctx.failed`` and ``ctx.reused`` stay empty: here
  a failing render raises, and there is no job cache);
- halfway through the collates, the controller "restarts": a fresh instance of the media type
  and a fresh `CollateContext` whose ``state`` is empty, as after a real resume. Jobs collated
  before it are not collated again, but are in the fresh context's ``done``, and ``finalize``
  runs on the fresh context;
- ``release`` runs after ``finalize`` (also when it raised), on the same context.

Use `farm.embedded.submit_embedded` (or the fixtures of `farm.pytest_plugin`) to run the same
project on real agent processes.
"""

from __future__ import annotations

import contextlib
import logging
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from farm.errors import PluginError, ProtocolError
from farm.mediatype import CollateContext, Job, MediaType, RenderContext
from farm.plugins import get_media_type
from farm.preview import BadPreview, PreviewContext, check_description
from farm.project import Project, load_project
from farm.protocol import JobResult, JobSpec, T, pack, unpack

log = logging.getLogger(__name__)


@dataclass
class LocalRun:
    """What `run_local` did.

    :param project: the project as loaded on the "controller".
    :param jobs: the jobs ``split`` yielded, in split order.
    :param results: ``{job key: result}`` as ``collate`` received it (after the wire round trip).
    :param outputs: what ``finalize`` returned.
    :param collated: job keys in the order they were collated.
    :param restarted_after: how many collates ran before the simulated controller restart
        (None: no restart).
    :param preview: what ``preview`` returned after ``finalize``, checked as the server checks
        it (`farm.preview.check_description`); None: the media type has no preview.
    """

    project: Project
    jobs: list[Job] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    collated: list[str] = field(default_factory=list)
    restarted_after: int | None = None
    preview: dict[str, Any] | None = None


def run_local(
    path: Path | str,
    *,
    threads: int = 1,
    output: str | None = None,
    shuffle: bool = True,
    seed: int = 0,
    restart: bool = True,
) -> LocalRun:
    """Render the project in folder ``path`` in this process, job by job.

    :param threads: the ``ctx.threads`` every render gets.
    :param output: the output folder (relative to the project), as ``farm submit --output``.
    :param shuffle: collate in an order shuffled with ``seed`` (False: split order).
    :param restart: simulate a controller restart halfway through the collates.
    :returns: a `LocalRun`; the final files are in ``.outputs``.
    :raises ProjectError: the project is malformed (as ``farm submit`` reports it).
    :raises PluginError: the plugin broke a contract the farm relies on: a value that cannot
        travel, ``configure`` without renderer checks (given the facts) making other settings,
        ``count`` not matching ``split``, a duplicate key, a dep on a job not yielded earlier.
    :raises Exception: whatever ``render``, ``collate`` or ``finalize`` raised, unchanged, so a
        failing test shows the plugin's own traceback.
    """
    submitted = load_project(path, output=output)
    wire = _wire_project(submitted)
    project = _controller_project(path, output, wire)
    media = get_media_type(project.media_type)
    run = LocalRun(project)
    with tempfile.TemporaryDirectory(prefix="farm-local-") as tmp:
        staged: dict[str, dict[str, Path]] = {}
        cache: dict[str, Any] = {}
        agent_project = Project.from_wire(wire).reconfigure(project.root)  # as an agent worker does
        for i, job in enumerate(_split(media, project, run)):
            sent = _wire_job(job, {d: run.results[d] for d in job.deps})
            out_dir, work_dir = Path(tmp, "out", str(i)), Path(tmp, "work", str(i))
            out_dir.mkdir(parents=True)
            work_dir.mkdir(parents=True)
            ctx = RenderContext(project_dir=project.root, output_dir=out_dir, work_dir=work_dir,
                                settings=agent_project.settings, threads=threads, cache=cache,
                                deps=sent.deps)
            with contextlib.chdir(work_dir):  # a worker's current folder is its work_dir
                result = media.render(Job(job.key, sent.params, job.inputs, job.deps), ctx)
            run.results[job.key] = _wire_result(job, result)
            staged[job.key] = {p.relative_to(out_dir).as_posix(): p
                               for p in sorted(out_dir.rglob("*")) if p.is_file()}
        _check_count(media, project, run)
        order = list(run.jobs)
        if shuffle:
            random.Random(seed).shuffle(order)
        half = len(order) // 2 if restart and len(order) > 1 else None
        done: dict[str, None] = {}  # its keys() are the read-only set ctx.done shows, as on a farm
        ctx = _collate_context(project, done)
        project.output_dir.mkdir(parents=True, exist_ok=True)
        for i, job in enumerate(order):
            if i == half:
                media, ctx = _restart(media, ctx, project, done)
                run.restarted_after = i
            media.collate(job, run.results[job.key], staged[job.key], ctx)
            run.collated.append(job.key)
            done[job.key] = None
        project.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            run.outputs = media.finalize(ctx)
        finally:  # as a controller does at every run end
            media.release(ctx)
    run.preview = _preview(media, project)
    return run


def _preview(media: MediaType, project: Project) -> dict[str, Any] | None:
    """``preview`` once, on the finished output, with the context the dashboard's server gives it."""
    ctx = PreviewContext(run_id="local", project=project.name,
                         settings=MappingProxyType(dict(project.settings)), output_dir=project.output_dir,
                         submitted=0.0,
                         log=logging.getLogger(f"farm.preview.{media.name}"))
    value = media.preview(ctx)
    if value is None:
        return None
    try:
        description = check_description(value)
    except BadPreview as exc:
        raise PluginError(f"{media.name}.preview returned a description the dashboard cannot use: "
                          f"{exc}") from None
    named = [*description.get("files", []), *([description["poster"]] if description.get("poster") else [])]
    missing = [name for name in named if not (project.output_dir / name).is_file()]
    if missing:
        raise PluginError(f"{media.name}.preview names files not in the output folder: {missing[:5]}")
    return description


def _split(media: MediaType, project: Project, run: LocalRun) -> Any:
    seen: set[str] = set()
    for job in media.split(project):
        if not isinstance(job, Job):
            raise PluginError(f"{media.name}.split yielded {job!r}, not a farm.mediatype.Job")
        if job.key in seen:
            raise PluginError(f"{media.name}.split yielded the key {job.key!r} twice; keys must be unique")
        missing = [d for d in job.deps if d not in seen]
        if missing:
            raise PluginError(f"job {job.key!r} depends on {missing}, which split did not yield earlier")
        seen.add(job.key)
        run.jobs.append(job)
        yield job


def _check_count(media: MediaType, project: Project, run: LocalRun) -> None:
    expected = media.count(project)
    if expected is not None and expected != len(run.jobs):
        raise PluginError(f"{media.name}.count() returned {expected}, but split yielded {len(run.jobs)} "
                          "jobs: the farm's progress and ETA would be wrong")


def _round_trip(kind: T, body: dict[str, Any], what: str) -> dict[str, Any]:
    """``body`` as the receiving end of the farm sees it, or a `PluginError` naming ``what``."""
    try:
        return unpack(pack(kind, body)).body
    except (TypeError, ValueError, OverflowError, ProtocolError) as exc:
        raise PluginError(f"{what} cannot travel between controller and agent (msgpack): "
                          f"{type(exc).__name__}: {exc}") from None


def _wire_project(project: Project) -> dict[str, Any]:
    wire = project.to_wire()
    _round_trip(T.JOBS, {"jobs": [], "projects": {"p": {"settings": wire["settings"]}}},
                f"the settings {project.media_type}.configure returned")
    got = _round_trip(T.JOBS, {"jobs": [], "projects": {"p": wire}}, f"project {project.name!r}")
    return got["projects"]["p"]


def _wire_job(job: Job, deps: dict[str, Any]) -> JobSpec:
    body = JobSpec("local", job.key, "p", job.params, deps, 1.0)
    got = _round_trip(T.JOBS, {"jobs": [body], "projects": {}},
                      f"job {job.key!r} (its params or its deps' results)")
    return JobSpec.from_rows(got["jobs"])[0]


def _wire_result(job: Job, result: Any) -> Any:
    body = JobResult("local", True, result).to_wire()
    got = _round_trip(T.RESULTS, {"results": [body]}, f"the result of job {job.key!r}")
    return JobResult.from_wire(got["results"][0]).result


def _controller_project(path: Path | str, output: str | None, wire: dict[str, Any]) -> Project:
    """The project as a controller reads it: no renderer checks, the submitter's facts instead."""
    project = load_project(path, output=output, renderer_checks=False, facts=wire.get("facts"))
    made, want = _wire_project(project)["settings"], wire["settings"]
    if made != want:
        differ = sorted(k for k in {*made, *want} if made.get(k) != want.get(k))
        raise PluginError(f"{project.media_type}.configure made other settings without renderer checks "
                          f"(as on a controller, given the renderer facts {wire.get('facts')!r}) than with them: "
                          f"{', '.join(map(repr, differ))} differ; put what only the renderer can tell in "
                          "renderer_facts and read it from settings.facts")
    return project


def _collate_context(project: Project, done: dict[str, None]) -> CollateContext:
    logger = logging.getLogger("farm.collate")
    return CollateContext(project, project.output_dir, {}, logger, done=done.keys())


def _restart(media: MediaType, ctx: CollateContext, project: Project,
             done: dict[str, None]) -> tuple[MediaType, CollateContext]:
    """A fresh media type instance and an empty ``state``, as a controller has after a restart.

    What the old state held is closed, as the old process's open files are when it dies.
    """
    for value in ctx.state.values():
        close = getattr(value, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
    log.debug("simulated controller restart after %s", ctx.state.keys())
    return type(media)(), _collate_context(project, done)
