"""A Blender that stays up for a worker slot: the scene loads once, then job after job.

A worker process renders one job at a time, so it keeps at most one Blender (`SLOT`),
started with the setup script in serve mode (see ``blender_setup.py``): jobs go to it as
JSON lines on stdin, and its stdout is the render log, with a marker line when the scene
is ready and after each job. It is started again when anything that shapes the scene
differs from the running one's: the Blender, the command, the settings, the run (a token
kept in the run's ``ctx.cache``) or the stat of the scene file and of every file Blender
said it reads. A Blender that died, or whose job went wrong, is replaced at the next job.

A worker that starts before it has a job may start a *spare* (`BlenderSlot.prewarm`): a
Blender without a scene, waiting on stdin, so Blender's own start overlaps the farm's. The
first job takes it over only if it was started as that job's Blender would be (the same
Blender, threads, folder and environment: its ``fits``) and the job's scene is a script; the
spare then runs the scene as the command line would (``blender_setup.py``). Any other job
replaces it with a Blender started for that job: a spare is never used for other settings.

While a job renders, the next one can be sent to the same Blender (*ahead*, `BlenderSlot.render`'s
``upcoming``), so it goes from one job to the next as ``blender -a`` goes from frame to frame,
while the worker checks and reports the first. Its frames go to a folder of the slot's own (two,
used in turn), never to the output folder the worker is reading; its lines wait in the pipe for its
own `render`, which checks that the job sent ahead is the one it renders and hands back that
folder. A done line names its job, so a job's frames and log are never another's.

It stays in the worker's process group, so the agent's kill of a timed-out worker's group
takes it too, and on Linux it also gets SIGKILL when the worker dies.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from farm.errors import RenderError
from farm.trace import enabled, mark
from farm_frames.blender import DONE_MARKER, READY_MARKER
from farm_frames.process import TAIL_LINES, kill, start_child

log = logging.getLogger(__name__)


@dataclass
class Rendered:
    """How a job went: ``returncode`` is None when Blender reported the job done; else
    Blender exited (``phase`` says whether loading the scene or rendering)."""

    tail: deque[str]
    pid: int
    version: str | None
    reused: bool
    returncode: int | None = None
    phase: str = "rendering"
    prewarmed: bool = False  # a spare, started before the job, rendered it
    #: a reused Blender's last lines before this job (its scene load, earlier jobs): a job it
    #: fails without a word (an os._exit in a handler) still has lines to show
    earlier: tuple[str, ...] = ()
    #: the folder this job's frames were written to, when it was sent ahead (see the module
    #: docstring); the caller moves them into place. None: its own output pattern's folder
    staged: Path | None = None


@dataclass(frozen=True)
class Spare:
    """How a job could take over a spare: ``fits`` must equal the spare's, and ``load`` is the
    line that makes it this job's Blender (`farm_frames.blender.spare_load`)."""

    fits: tuple[Any, ...]
    load: dict[str, Any]


@dataclass
class _Running:
    key: tuple[Any, ...] | None  # None: a spare, waiting for its scene
    proc: subprocess.Popen[str]
    version: str = ""
    files: tuple[str, ...] = ()
    signature: tuple[Any, ...] = ()
    scratch: Path | None = None
    fits: tuple[Any, ...] = ()  # a spare's: see `Spare`
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))  # its jobs' lines
    ahead: _Ahead | None = None  # the job it was sent while rendering the one before


@dataclass
class _Ahead:
    line: dict[str, Any]  # as sent: its output is in ``folder``
    folder: Path


class _Exited(Exception):
    def __init__(self, returncode: int) -> None:
        super().__init__(returncode)
        self.returncode = returncode


@dataclass
class BlenderSlot:
    """At most one running Blender for this process; see the module docstring."""

    running: _Running | None = None

    def prewarm(
        self, *, fits: tuple[Any, ...], cmd: Sequence[str], env: dict[str, str], scratch: Path
    ) -> None:
        """Start a spare with ``cmd`` in ``scratch``, unless a Blender is running already."""
        if self.running is None:
            self._start(None, cmd, env, scratch).fits = tuple(fits)

    def render(
        self,
        *,
        key: tuple[Any, ...],
        cmd: Sequence[str],
        env: dict[str, str],
        scratch: Path,
        scene: Path,
        job: dict[str, Any],
        log_file: Path,
        on_line: Callable[[str], None],
        spare: Spare | None = None,
        upcoming: Callable[[Path], dict[str, Any] | None] | None = None,
    ) -> Rendered:
        """Render ``job`` (``{"id": str, "output": pattern, "runs": [[first, last], ...]}``) in
        the running Blender if it fits ``key`` and its files are unchanged, else in the spare if
        ``spare`` says it fits, else in a new one started with ``cmd`` in ``scratch`` (its
        current folder, kept across jobs). A job this Blender was sent ahead is not sent again:
        `Rendered.staged` says where its frames are; one sent ahead that is not ``job`` stops it.

        ``upcoming(folder)``: the next job's line with its output in ``folder``, or None while
        it is not known; asked while ``job`` renders, it is sent ahead once known. The next
        `render` must be that job's (anything else stops this Blender).

        Any exception while Blender works (a cancel, an interrupt) kills it first.
        """
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        with log_file.open("w", encoding="utf-8") as out:
            current = self._reusable(key, scene)
            if current is not None and current.ahead is not None and not _same_job(current.ahead.line, job):
                log.warning("Blender %d was sent job %s ahead, not %s; starting another", current.proc.pid,
                            current.ahead.line.get("id"), job.get("id"))
                current = None
            reused = current is not None
            earlier = tuple(current.recent) if current is not None else ()
            prewarmed = False
            if current is None:
                current = self._adopt(key, spare)
                prewarmed = current is not None
            if current is None:
                self.stop()
                current = self._start(key, cmd, env, scratch)
            try:
                while not reused:
                    try:
                        ready = _read_until(current.proc, READY_MARKER, out, tail, on_line)
                    except _Exited as exited:
                        self.stop()
                        return Rendered(tail, current.proc.pid, None, False, exited.returncode,
                                        "loading the scene", prewarmed)
                    if "unfit" in ready:  # the spare cannot be what a cold start would be: start one
                        log.info("the waiting Blender cannot take this scene (%s); starting another",
                                 ready["unfit"])
                        self.stop()
                        current, prewarmed = self._start(key, cmd, env, scratch), False
                        continue
                    mark("frames: Blender ready, scene loaded")
                    current.version = str(ready.get("version", ""))
                    current.files = tuple(str(f) for f in ready.get("files", ()))
                    current.signature = _signature(scene, current.files)
                    break
                proc = current.proc
                assert proc.stdin is not None
                staged = None
                try:
                    if current.ahead is not None:  # it has been rendering this job since the last one ended
                        staged, current.ahead = current.ahead.folder, None
                        mark("frames: job was sent ahead")
                    else:
                        mark("frames: job sent to Blender")
                        proc.stdin.write(json.dumps(job) + "\n")
                        proc.stdin.flush()
                    poll = None if upcoming is None else lambda: _send_ahead(current, upcoming, staged)
                    said = _read_until(proc, DONE_MARKER, out, tail, on_line, poll)
                    mark("frames: job done")
                    if enabled():  # when Blender itself took the job and finished it: its idle time
                        mark("frames: Blender took the job", float(said.get("began") or 0) or None)
                        mark("frames: Blender finished the job", float(said.get("ended") or 0) or None)
                    if said.get("id") != job.get("id"):
                        raise RenderError(f"Blender {proc.pid} reported job {said.get('id')} done, "
                                          f"not {job.get('id')}: a bug in farm_frames")
                except (_Exited, BrokenPipeError):
                    returncode = proc.wait()
                    self.stop()
                    return Rendered(tail, proc.pid, current.version, reused, returncode, prewarmed=prewarmed,
                                    earlier=earlier)
            except BaseException:
                self.stop()
                raise
        current.recent.extend(tail)
        return Rendered(tail, proc.pid, current.version, reused, prewarmed=prewarmed, earlier=earlier,
                        staged=staged)

    def _adopt(self, key: tuple[Any, ...], spare: Spare | None) -> _Running | None:
        """The spare, sent ``spare.load`` and now ``key``'s Blender, if it fits; else None."""
        running = self.running
        if running is None or running.key is not None:
            return None
        if spare is None or running.fits != spare.fits:
            log.info("the waiting Blender was started for other settings; starting one for this job")
            return None
        if running.proc.poll() is not None:
            log.info("the waiting Blender %d exited (code %s); starting another", running.proc.pid,
                     running.proc.returncode)
            return None
        assert running.proc.stdin is not None
        try:
            running.proc.stdin.write(json.dumps(spare.load) + "\n")
            running.proc.stdin.flush()
        except OSError:  # it died meanwhile
            return None
        mark("frames: scene sent to the waiting Blender")
        running.key = key
        return running

    def stop(self) -> None:
        """Stop the running Blender, if any (the next job starts a fresh one)."""
        running, self.running = self.running, None
        if running is None:
            return
        kill(running.proc)
        if running.scratch is not None:
            shutil.rmtree(running.scratch, ignore_errors=True)

    def _reusable(self, key: tuple[Any, ...], scene: Path) -> _Running | None:
        running = self.running
        if running is None or running.key != key:
            return None
        if running.proc.poll() is not None:
            log.info("Blender %d exited (code %s) since its last job; starting another",
                     running.proc.pid, running.proc.returncode)
            return None
        if _signature(scene, running.files) != running.signature:
            log.info("the scene or a file it reads changed; loading it again")
            return None
        return running

    def _start(
        self, key: tuple[Any, ...] | None, cmd: Sequence[str], env: dict[str, str], scratch: Path
    ) -> _Running:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        mark("frames: starting Blender")
        proc = start_child(cmd, env=env, cwd=scratch)
        self.running = _Running(key, proc, scratch=scratch)
        return self.running


def _same_job(sent: dict[str, Any], job: dict[str, Any]) -> bool:
    return sent.get("id") == job.get("id") and sent.get("runs") == job.get("runs")


def _send_ahead(
    current: _Running, upcoming: Callable[[Path], dict[str, Any] | None], busy: Path | None
) -> bool:
    """Send ``current`` the next job, if ``upcoming`` knows it, into the staging folder that
    ``busy`` (the folder of the job rendering now, if staged) is not; True once there is
    nothing more to do (sent, or one was sent already)."""
    if current.ahead is not None or current.scratch is None:
        return True
    folder = current.scratch / ("ahead1" if busy is not None and busy.name == "ahead0" else "ahead0")
    line = upcoming(folder)
    if line is None:
        return False
    shutil.rmtree(folder, ignore_errors=True)  # frames of a job sent ahead to an earlier Blender
    folder.mkdir(parents=True)
    assert current.proc.stdin is not None
    try:
        current.proc.stdin.write(json.dumps(line) + "\n")
        current.proc.stdin.flush()
    except OSError:  # it died: the read that asked us finds out
        return True
    current.ahead = _Ahead(line, folder)
    mark("frames: next job sent ahead to Blender")
    return True


def _read_until(
    proc: subprocess.Popen[str], marker: str, out: IO[str], tail: deque[str], on_line: Callable[[str], None],
    poll: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Pass Blender's lines on until ``marker``; its JSON body is returned. ``poll`` is called
    before the first line and after each until it returns True. Raises `_Exited` at end of
    output, once Blender has exited."""
    assert proc.stdout is not None
    while True:
        if poll is not None and poll():
            poll = None
        raw = proc.stdout.readline()
        if not raw:
            raise _Exited(proc.wait())
        line = raw.rstrip("\n")
        if line.startswith(marker):
            return dict(json.loads(line[len(marker):]))
        out.write(raw)
        tail.append(line)
        on_line(line)


def _signature(scene: Path, files: Sequence[str]) -> tuple[Any, ...]:
    """What changes when the scene file or a file it reads changes (or goes)."""

    def stat(path: str | Path) -> tuple[int, int, int] | None:
        try:
            found = os.stat(path)
        except OSError:
            return None
        return (found.st_ino, found.st_size, found.st_mtime_ns)

    return (stat(scene), *(stat(f) for f in files))


#: this worker process's Blender (a worker renders one job at a time)
SLOT = BlenderSlot()
atexit.register(SLOT.stop)
