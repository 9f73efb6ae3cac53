"""The `synthetic` media type: jobs that sleep, write a small file, fail or crash on demand.

For benchmarking dispatch and for testing the scheduler with real processes and
sockets; it never stands in for a real media type's own tests. Try a farm with it:
``[synthetic] jobs = 1000, sleep = 0.01``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from farm.errors import RenderError
from farm.hookspecs import hookimpl
from farm.mediatype import CollateContext, Job, MediaType, RenderContext
from farm.paths import UnsafePath, resolve_inside, safe_relpath
from farm.project import Project
from farm.settings import SettingsReader

__version__ = "1.0.0"


def job_key(index: int) -> str:
    return _KEY % index


_KEY = "job-%07d"  # printf-style: cheaper than an f-string's format spec, on the path of every job
_ONE_UNIT = (1.0,)  # each job's units when the settings name none


def payload(key: str, size: int) -> bytes:
    """Deterministic bytes for a job, so outputs can be compared between runs."""
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Synthetic(MediaType):
    name = "synthetic"
    description = "Synthetic jobs for benchmarks and scheduler tests"
    default_timeout = 60.0
    unit = "items"  # what progress counts beside jobs: `units_per_job` per job

    def configure(self, s: SettingsReader) -> dict[str, Any]:
        settings = {
            "jobs": s.integer("jobs", 10, min=0),
            "sleep": s.number("sleep", 0.0, min=0),
            "output_bytes": s.integer("output_bytes", 0, min=0),
            "fail": s.str_list("fail", []),  # keys that always raise
            "crash": s.str_list("crash", []),  # keys that kill their worker process
            "hang": s.str_list("hang", []),  # keys that never finish
            "log_collations": s.boolean("log_collations", False),
            # append each rendered key to this file in the agent's copy of the project (tests count renders)
            "render_log": _project_path(s, "render_log"),
            # job 0 becomes an "analysis" job that every other job depends on
            "depend_on_first": s.boolean("depend_on_first", False),
            # results may be reused across runs (off: benchmarks and scheduler tests count renders)
            "cache": s.boolean("cache", False),
            # a folder of the project: job i reads <folder>/<key>.txt and outputs its bytes
            "inputs": _project_path(s, "inputs"),
            # how many `unit` each job holds; a list is cycled (job i holds list[i % len])
            "units_per_job": _units_per_job(s),
            # finalize writes outcome.json: the run's done, failed and reused job keys (lifecycle tests)
            "report": s.boolean("report", False),
        }
        s.finish()
        return settings

    def cache_settings(self, settings: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return settings if settings["cache"] else None

    def count(self, project: Project) -> int:
        return project.settings["jobs"]

    def units(self, job: Job, project: Project) -> float:
        weights = project.settings.get("units_per_job", _ONE_UNIT)  # asked for every job: no list made
        return weights[job.params["i"] % len(weights)]

    def total_units(self, project: Project) -> float:
        weights, jobs = project.settings.get("units_per_job", [1.0]), project.settings["jobs"]
        whole, rest = divmod(jobs, len(weights))
        return whole * sum(weights) + sum(weights[:rest])

    def split(self, project: Project) -> Iterator[Job]:
        first = (job_key(0),) if project.settings["depend_on_first"] else ()
        folder = project.settings["inputs"]
        # lean: farm's dispatch benchmark measures farm, not this loop (no call or keyword per job)
        for i in range(project.settings["jobs"]):
            key = _KEY % i
            yield Job(key, {"i": i}, (f"{folder}/{key}.txt",) if folder else None, first if i else ())

    def render(self, job: Job, ctx: RenderContext) -> Mapping[str, Any] | None:
        settings = ctx.settings
        if job.key in settings["fail"]:
            raise RenderError(f"{job.key} is set to fail")
        if job.key in settings["crash"]:
            os._exit(17)
        if job.key in settings["hang"]:
            while True:
                time.sleep(3600)
        if settings["render_log"]:
            _append_line(ctx.project_dir, settings["render_log"], job.key)
        if job.deps and ctx.deps.get(job.deps[0]) != {"token": job.deps[0]}:
            raise RenderError(f"{job.key} ran without its dependency's result: {dict(ctx.deps)!r}")
        data = None
        if settings["inputs"]:  # read first, as a renderer reads its inputs before it works
            source = resolve_inside(ctx.project_dir, f"{settings['inputs']}/{job.key}.txt")
            data = source.read_bytes() if source.exists() else b""
        if settings["sleep"]:
            time.sleep(settings["sleep"])
        if data is not None:
            (ctx.output_dir / f"{job.key}.txt").write_bytes(data)
        if settings["output_bytes"]:
            (ctx.output_dir / f"{job.key}.bin").write_bytes(payload(job.key, settings["output_bytes"]))
        return {"token": job.key} if settings["depend_on_first"] and not job.deps else None

    def collate(self, job: Job, result: Any, outputs: Mapping[str, Path], ctx: CollateContext) -> None:
        if outputs:
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            for name, staged in outputs.items():
                _move_over(staged, ctx.output_dir / name)
        if ctx.project.settings["log_collations"]:
            log = ctx.state.get("log")
            if log is None:
                ctx.output_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(ctx.output_dir / "collated.log",  # appended to, so never through a link
                             os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                log = ctx.state["log"] = os.fdopen(fd, "a")
            log.write(job.key + "\n")
            log.flush()

    def finalize(self, ctx: CollateContext) -> list[Path]:
        outputs = []
        log = ctx.state.pop("log", None)
        if log is not None:
            log.close()
            outputs.append(ctx.output_dir / "collated.log")
        if ctx.project.settings.get("report"):
            report = ctx.output_dir / "outcome.json"
            keys = {"done": ctx.done, "failed": ctx.failed, "reused": ctx.reused}
            report.write_text(json.dumps({name: sorted(found) for name, found in keys.items()}))
            outputs.append(report)
        return outputs


def _project_path(s: SettingsReader, key: str) -> str:
    """A path inside the project ("" when unset): relative, not leaving it, not through a link."""
    value = s.str(key, "")
    if not value:
        return ""
    try:
        rel = safe_relpath(value)
        resolve_inside(s.root, rel)
    except UnsafePath as exc:
        raise s.error(key, str(exc)) from None
    return rel


def _units_per_job(s: SettingsReader) -> list[float]:
    value = s.get("units_per_job", 1.0)
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > 1000 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1e12 for v in values):
        raise s.error("units_per_job", f"expected a number >= 0 or a list of 1 to 1000, got {value!r}")
    return [float(v) for v in values]


def _move_over(staged: Path, dest: Path) -> None:
    """Move ``staged`` to ``dest``, replacing what is there: a link at ``dest`` is replaced, not followed
    (`shutil.move` would move the file into a linked folder)."""
    try:
        os.replace(staged, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")  # O_EXCL: a new file
        try:
            with os.fdopen(fd, "wb") as out, open(staged, "rb") as src:
                shutil.copyfileobj(src, out)
            shutil.copymode(staged, tmp)
            os.replace(tmp, dest)
        except BaseException:  # a full disk: no half-written copy left in the output folder
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.unlink(staged)


def _append_line(root: Path, rel: str, line: str) -> None:
    """Append to ``root/rel`` without following a link, nor writing through a hard-linked asset."""
    path = resolve_inside(root, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_nlink > 1:  # a project asset shares its inode with the node's cache
            raise RenderError(f"render_log {rel!r} is one of the project's files; name a new file")
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@hookimpl
def farm_register_media_types(register):
    register(Synthetic)
