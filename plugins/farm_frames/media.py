"""The ``frames`` media type: Blender renders chunks of frames on agents; the
controller gathers them into ``frames/`` and encodes a video and a contact sheet."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from farm import trace
from farm.errors import RenderError
from farm.mediatype import ChunkAdvisor, CollateContext, Job, MediaType, RenderContext
from farm.outputrecord import removal_note, remove_recorded, replace_outputs
from farm.paths import UnsafePath, resolve_inside
from farm.preview import PreviewContext
from farm.project import Project
from farm.settings import SettingsReader
from farm_frames import preview
from farm_frames.blender import (
    SETUP_ENV,
    BlenderNotFound,
    find_blender,
    output_pattern,
    serve_command_line,
    setup_env,
    spare_command_line,
    spare_env,
    spare_load,
)
from farm_frames.config import read_settings
from farm_frames.framerange import (
    FrameIndex,
    Runs,
    chunk_runs,
    clip_runs,
    format_runs,
    frame_count,
    iter_frames,
    runs_of,
)
from farm_frames.images import FORMATS, BadImage, check_image
from farm_frames.progress import LOG_LINES, ChunkProgress, log_tail
from farm_frames.scenefiles import missing_from_log, summarise
from farm_frames.video import CODECS, contact_sheet, encode_video
from farm_frames.warm import SLOT, Rendered, Spare

log = logging.getLogger(__name__)

FRAMES_DIR = "frames"
#: the video and contact sheet each successful run wrote, in the project's state folder
#: (`farm.outputrecord`): the next run removes those it does not write again, if unchanged
RECORD = "frames-outputs.json"


def _traced(feed: Callable[[str], None]) -> Callable[[str], None]:
    """``feed``, marking each frame Blender saved in the start-up timeline (`farm.trace`)."""

    def traced(line: str) -> None:
        if line.startswith("Saved:"):
            trace.mark("frames: frame saved")
        feed(line)

    return traced


def frame_name(frame: int, fmt: str) -> str:
    """The project's frame file name: ``frame_000012.png``."""
    return f"frame_{frame:06d}{FORMATS[fmt][1]}"


def output_stem(project_name: str) -> str:
    """The project name, made safe as a file name for the video and contact sheet."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", project_name).strip("._") or "frames"


def contact_sheet_name(project_name: str) -> str:
    return f"{output_stem(project_name)}-contact.png"


def job_key(runs: Runs) -> str:
    return f"frames-{runs[0][0]:06d}-{runs[-1][1]:06d}"


_KEY = re.compile(r"frames-(\d{6})-(\d{6})")


class Frames(MediaType):
    name = "frames"
    description = "Video frames rendered by Blender, encoded into a video with ffmpeg"
    requirements = ("blender",)
    default_timeout = 3600.0
    unit = "frames"
    adaptive_chunks = True

    def available(self) -> str | None:
        # Cheap and quiet: every agent asks at start, whatever it will render, so no Blender is
        # started here (its version is read at the first job, which fails if it does not run).
        try:
            find_blender()
        except BlenderNotFound as exc:
            return str(exc)
        return None

    def configure(self, settings: SettingsReader) -> dict[str, Any]:
        return read_settings(settings)

    def count(self, project: Project) -> int:
        """Jobs at the fixed chunk (adaptive chunks: the controller updates it as sizes change)."""
        settings = project.settings
        return math.ceil(frame_count(settings["frames"]) / settings["chunk"])

    def units(self, job: Job, project: Project) -> float:
        return frame_count(job.params["runs"])

    def total_units(self, project: Project) -> float:
        return frame_count(project.settings["frames"])

    def cache_settings(self, settings: Mapping[str, Any]) -> Mapping[str, Any]:
        # The frame list and chunking only choose which jobs exist (each job's params name its
        # frames) and the video settings only reach the encode: extending a range reuses the rest.
        return {k: v for k, v in settings.items() if k not in ("frames", "chunk", "chunk_fixed", "video")}

    def split(self, project: Project, chunks: ChunkAdvisor | None = None) -> Iterator[Job]:
        """Chunks of consecutive listed frames; a job's key and params name its frames only, so
        a chunk of the same frames is the same job (the cache and a resume find it) whatever
        size chose it. A chunk written in farm.toml is kept as it is."""
        settings = project.settings
        size = settings["chunk"]
        if chunks is None:
            for runs in chunk_runs(settings["frames"], size):
                yield Job(job_key(runs), {"runs": runs}, units=frame_count(runs))
            return
        # A written chunk goes through the advisor too (fixed): it counts the jobs left (the
        # progress total) and finds chunks done before at other sizes.
        fixed = settings.get("chunk_fixed", True)
        index = FrameIndex(settings["frames"])
        done = 0
        while done < index.total:
            def make(units: int, start: int = done) -> Job:
                runs = index.slice(start, units)
                return Job(job_key(runs), {"runs": runs})

            job = chunks.next_job(index.total - done, size, make, fixed=fixed)
            yield job
            done += job.units

    # -- on the agent --------------------------------------------------------------

    def prewarm(self, work_dir: Path, threads: int) -> None:
        """Start this slot's Blender now, without its scene (`farm_frames.warm`): a job for a
        scene script with these threads takes it over, any other replaces it."""
        try:
            blender = find_blender()
        except BlenderNotFound:
            return  # the job says why
        scratch = _blender_scratch(work_dir)
        env = spare_env()
        env["TMP"] = env["TMPDIR"] = str(scratch)
        try:
            SLOT.prewarm(fits=_fits(blender, threads, scratch, env),
                         cmd=spare_command_line(blender, threads=threads), env=env, scratch=scratch)
        except OSError as exc:  # the job tries again, and says why
            log.info("cannot start Blender %s ahead of the first job: %s", blender, exc)

    def render(self, job: Job, ctx: RenderContext) -> Mapping[str, Any]:
        settings = ctx.settings
        runs: Runs = job.params["runs"]
        scene = _scene_on_agent(ctx)
        blender = self._blender()  # the node's own: a project never chooses it
        frames_dir = ctx.output_dir / FRAMES_DIR
        threads = max(1, ctx.threads)
        fmt = settings["format"]
        cmd = serve_command_line(blender, scene=scene, frames_dir=frames_dir, threads=threads, fmt=fmt)
        env = setup_env(dict(settings), ctx.project_dir, serve=True)
        # One Blender per slot for the whole run: a new run (a new cache), another Blender,
        # scene, settings or thread count start a new one (the output folder is set per job);
        # changed files are caught by the slot.
        run_token = ctx.cache.setdefault("frames.run", object())
        key = (run_token, blender, str(scene), threads, env[SETUP_ENV])
        progress = ChunkProgress(frame_count(runs), ctx.progress)
        on_line = _traced(progress.feed) if trace.enabled() else progress.feed
        started = time.monotonic()
        scratch = _blender_scratch(ctx.work_dir)
        # Blender's own temp folder (blender_XXXXXX; $TMP first, then $TMPDIR) goes in it too, so a
        # killed agent's is removed with its scratch folder (farm.agent.scratch), not left in /tmp
        env["TMP"] = env["TMPDIR"] = str(scratch)
        # a spare started by `prewarm` can become this Blender only for a scene script (see warm.py)
        spare = None
        if scene.suffix.lower() == ".py":
            load = spare_load(cmd, env, scene=scene, frames_dir=frames_dir, fmt=fmt)
            spare = Spare(_fits(blender, threads, scratch, env), load)
        try:
            done = SLOT.render(
                key=key, cmd=cmd, env=env, scratch=scratch,
                scene=scene, job={"id": job.key, "output": output_pattern(frames_dir), "runs": runs},
                log_file=ctx.work_dir / "blender.log", on_line=on_line, spare=spare,
                upcoming=lambda folder: _next_line(ctx, folder),
            )
        except OSError as exc:  # Blender is there but cannot be started
            raise RenderError(f"cannot start Blender {blender}: {exc}") from None
        if done.staged is not None and done.returncode is None:  # it was sent ahead: its frames come in
            _take_staged(done.staged, frames_dir)
        seconds = time.monotonic() - started
        where = f"frames {format_runs(runs)}"
        refused = missing_from_log(done.tail)
        if refused:
            message = f"the scene reads files that are not in the project on this agent: {summarise(refused)}"
            raise _render_error(message, done, ctx.project_dir)
        if done.returncode is not None:
            doing = "loading the scene for" if done.phase != "rendering" else "rendering"
            message = f"Blender exited with code {done.returncode} {doing} {where}"
            raise _render_error(message, done, ctx.project_dir)
        problems, size = self._check_frames(runs, frames_dir, settings)
        if problems:
            SLOT.stop()  # something in it misbehaves: the next job gets a fresh one
            message = f"Blender reported {where} done but they are not all there: {problems}"
            raise _render_error(message, done, ctx.project_dir)
        ctx.progress(1.0)
        how = ("already running" if done.reused else "started before the job" if done.prewarmed
               else "started for this job")
        how += ", given this job ahead" if done.staged is not None else ""
        ctx.log.info("rendered %s in %.2f s with Blender %s (pid %d, %s)", where, seconds, done.version,
                     done.pid, how)
        return {"frames": frame_count(runs), "seconds": round(seconds, 3), "blender": done.version,
                "size": size, "blender_pid": done.pid, "warm": done.reused, "prewarmed": done.prewarmed,
                "ahead": done.staged is not None}

    @staticmethod
    def _blender() -> str:
        """This node's Blender (never from the settings); its version comes from the Blender
        that renders, so no extra process is started for it."""
        try:
            return find_blender()
        except BlenderNotFound as exc:
            raise RenderError(str(exc)) from None

    @staticmethod
    def _check_frames(
        runs: Runs, frames_dir: Path, settings: Mapping[str, Any]
    ) -> tuple[str, list[int] | None]:
        """Every expected frame must be a whole image of the expected size; extras are dropped."""
        fmt = settings["format"]
        expected = {frame_name(n, fmt) for n in iter_frames(runs)}
        problems: list[str] = []
        sizes = set()
        for name in sorted(expected):
            try:
                info = check_image(frames_dir / name, fmt)
                sizes.add((info.width, info.height))
            except BadImage as exc:
                problems.append(str(exc))
        if settings["resolution"] is not None and sizes - {tuple(settings["resolution"])}:
            problems.append(f"frames are {sorted(sizes)}, expected {tuple(settings['resolution'])}")
        elif len(sizes) > 1:
            problems.append(f"frames differ in size: {sorted(sizes)}")
        if frames_dir.is_dir():
            for extra in sorted(frames_dir.iterdir()):
                if extra.name not in expected:  # e.g. a scene script that writes its own files
                    log.warning("dropping unexpected output %s", extra.name)
                    if extra.is_dir():
                        shutil.rmtree(extra)
                    else:
                        extra.unlink()
        if len(problems) > 5:
            problems = [*problems[:5], f"and {len(problems) - 5} more"]
        size = list(next(iter(sizes))) if len(sizes) == 1 else None
        return "; ".join(problems), size

    # -- on the controller ---------------------------------------------------------

    def collate(
        self, job: Job, result: Mapping[str, Any] | None, outputs: Mapping[str, Path], ctx: CollateContext
    ) -> None:
        fmt = ctx.project.settings["format"]
        expected = {f"{FRAMES_DIR}/{frame_name(n, fmt)}" for n in iter_frames(job.params["runs"])}
        missing = expected - set(outputs)
        if missing:
            raise RenderError(f"job {job.key} came back without {', '.join(sorted(missing)[:5])}")
        (ctx.output_dir / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
        for name, staged in outputs.items():
            if name in expected:
                _place(staged, ctx.output_dir / name)
            else:
                ctx.log.warning("job %s: ignoring unexpected output %s", job.key, name)

    def finalize(self, ctx: CollateContext) -> list[Path]:
        """The video and contact sheet of the frames this run's done jobs made; none when a job
        failed or a frame is missing (see `_made_frames`). The video and contact sheet an earlier
        run recorded writing are removed unless this run wrote them again (another codec's
        video), or the user changed them since (`farm.outputrecord`)."""
        settings = ctx.project.settings
        video = settings["video"]
        frames_dir = ctx.output_dir / FRAMES_DIR
        trace.mark("frames: finalize")
        stem = output_stem(ctx.project.name)
        out = ctx.output_dir / f"{stem}{CODECS[video['codec']].suffix}"
        sheet = ctx.output_dir / contact_sheet_name(ctx.project.name)
        # every name this type gives its outputs: one left there that no run recorded is named
        lookalikes = [*(ctx.output_dir / f"{stem}{c.suffix}" for c in CODECS.values()), sheet]
        if ctx.failed:
            failed = format_runs(_frames_of(ctx.failed, settings["frames"]))
            removed, kept = remove_recorded(ctx.project, RECORD, lookalikes)
            ctx.log.warning(
                "%s: no video or contact sheet: frames %s failed (%d of %d jobs)%s; %s", ctx.project.name,
                failed, len(ctx.failed), len(ctx.failed) + len(ctx.done), removal_note(removed, kept),
                f"the frames that rendered are in {frames_dir}" if ctx.done else "no frames rendered")
            return []
        written: list[Path] = []
        try:
            frames = self._made_frames(ctx, frames_dir)
            # Each output is written under a temporary name and renamed only when whole (see
            # `video`); errors are RenderErrors, which the controller reports as one line.
            info = encode_video(frames, out, fps=video["fps"], codec=video["codec"], crf=video["crf"])
            written.append(out)
            ctx.log.info(
                "%s: %d frames, %dx%d, %.3f s at %g fps", out.name, info.frames, info.width, info.height,
                info.duration, video["fps"],
            )
            contact_sheet(frames, sheet)
            trace.mark("frames: video and contact sheet written")
        except BaseException as exc:
            # half a set of outputs, or an earlier run's, would look like this run's
            for path in written:
                with contextlib.suppress(OSError):  # the error below says why there is no video
                    path.unlink(missing_ok=True)
            removed, kept = remove_recorded(ctx.project, RECORD, lookalikes)
            if removed or kept:  # the error says why there is no video; this, what is left
                note = removal_note(removed, kept)
                ctx.log.warning("%s: no video or contact sheet%s", ctx.project.name, note)
            if isinstance(exc, OSError):  # a full disk, a read-only output folder
                why = f"cannot write the video or contact sheet in {ctx.output_dir}: {exc}"
                raise RenderError(why) from None
            raise
        replace_outputs(ctx, RECORD, [out, sheet])  # another codec's video would look current
        return [out, sheet]

    @staticmethod
    def _made_frames(ctx: CollateContext, frames_dir: Path) -> list[Path]:
        """The listed frames, each made by a job this run counts as done (rendered or reused)
        and on disk whole; raises `RenderError` naming the others. Not what the folder holds: it
        keeps earlier runs' frames (another range, a job that failed)."""
        settings = ctx.project.settings
        fmt = settings["format"]
        made = set(iter_frames(_frames_of({*ctx.done, *ctx.reused}, settings["frames"])))
        unmade = [n for n in iter_frames(settings["frames"]) if n not in made]
        if unmade:
            raise RenderError(f"no job of this run made frames {format_runs(runs_of(unmade))}: "
                              "no video from other runs' frames")
        bad = []
        frames = []
        for number in iter_frames(settings["frames"]):
            path = frames_dir / frame_name(number, fmt)
            frames.append(path)
            try:
                check_image(path, fmt)
            except BadImage:
                bad.append(number)
        if bad:
            raise RenderError(
                f"the frame sequence in {frames_dir} is incomplete: frames {format_runs(runs_of(bad))} "
                "are missing or damaged"
            )
        return frames

    def preview(self, ctx: PreviewContext) -> Mapping[str, Any]:
        return preview.describe(ctx, FRAMES_DIR, contact_sheet_name(ctx.project))


def key_runs(key: str, listed: Runs) -> Runs:
    """The frames of the job ``key`` names (`job_key`): a chunk takes consecutive listed
    frames, so every listed frame from its first to its last. [] for another key."""
    found = _KEY.fullmatch(key)
    return clip_runs(listed, int(found.group(1)), int(found.group(2))) if found else []


def _frames_of(keys: Iterable[str], listed: Runs) -> Runs:
    """The frames of the jobs ``keys`` name, as runs."""
    frames: set[int] = set()
    for key in keys:
        frames.update(iter_frames(key_runs(key, listed)))
    return runs_of(sorted(frames))


def _place(staged: Path, dest: Path) -> None:
    """Put a frame in place whole or not at all, replacing an earlier copy (a re-collated job)."""
    try:
        os.replace(staged, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        partial = dest.with_name(f".{dest.name}.partial")  # another file system: copy, then rename
        shutil.copyfile(staged, partial)
        os.replace(partial, dest)


def _next_line(ctx: RenderContext, folder: Path) -> dict[str, Any] | None:
    """The job line of the job this worker renders next (`RenderContext.upcoming`), writing its
    frames into ``folder``; None while it is not known."""
    nxt = ctx.upcoming()
    runs = nxt.params.get("runs") if nxt is not None else None
    if not isinstance(runs, list):
        return None
    return {"id": nxt.key, "output": output_pattern(folder), "runs": runs}


def _take_staged(staged: Path, frames_dir: Path) -> None:
    """Move what a job sent ahead wrote into its output folder (the same file system: renames);
    the frame checks then run on them as on any job's."""
    frames_dir.mkdir(parents=True, exist_ok=True)
    try:
        entries = list(staged.iterdir())
    except FileNotFoundError:  # it wrote nothing: the checks name the missing frames
        return
    for entry in entries:
        os.replace(entry, frames_dir / entry.name)


def _blender_scratch(work_dir: Path) -> Path:
    """Blender's current folder, beside the job's in the agent's scratch folder."""
    return work_dir.with_name(work_dir.name + ".blender")


def _fits(blender: str, threads: int, scratch: Path, env: Mapping[str, str]) -> tuple[Any, ...]:
    """What a spare Blender and a job's Blender must share (`farm_frames.warm.Spare`): all of
    its process but the scene and the settings, which the spare learns with the job."""
    return (blender, threads, str(scratch), tuple(sorted((k, v) for k, v in env.items() if k != SETUP_ENV)))


def _scene_on_agent(ctx: RenderContext) -> Path:
    """The scene file, which must be a .blend or .py inside the project folder: the settings
    come from the controller, and Blender runs whatever file they name."""
    name = ctx.settings.get("scene")
    try:  # no component may lead out, symlinks included
        scene = resolve_inside(ctx.project_dir, name)
    except UnsafePath as exc:
        raise RenderError(f"refusing to render: the scene is not a file in the project ({exc})") from None
    if scene.suffix.lower() not in (".blend", ".py") or not scene.is_file():
        raise RenderError(f"refusing to render: the scene {name!r} is not a project's .blend or .py file")
    return scene


def _render_error(message: str, done: Rendered, project_dir: Path) -> RenderError:
    """``message`` with the last lines Blender printed. A Blender that was already running and
    printed nothing for this job (it died at once) shows its lines from before the job, said so."""
    text = log_tail(done.tail)
    if not text and done.earlier:
        said = (f"[Blender {done.pid} was already running: the lines above are from its scene load and "
                "earlier jobs; it printed nothing for this job]")
        text = f"{log_tail(done.earlier, LOG_LINES - 1)}\n{said}"
    elif not text:
        text = f"[Blender {done.pid} printed nothing before it exited]"
    # Blender names the agent's copy of the project (a folder in its cache or scratch); the user
    # knows the files by their place in the project: `File "scene.py", line 3`
    text = text.replace(f"{project_dir}/", "")
    error = RenderError(f"{message}\n--- Blender log (last lines) ---\n{text}")
    error.log = text  # type: ignore[attr-defined]  # for a core that ships logs separately
    return error
