"""A long-lived child worker process: runs one job at a time for its agent.

Started once per slot by the agent (``python -m farm.agent.worker ENDPOINT SLOT DIR``)
and restarted if it dies, so no process is started per job and a crash or hang in a
job only ever costs this process. Talks to its agent over a local ZeroMQ socket in the
protocol's W_* messages (`farm.protocol`): jobs come as `JobSpec`, results go as `JobResult`.
A job's `RenderContext.upcoming` tells its media type the job this worker runs next, where that is
known already (the rest of its batch, or a batch waiting in the socket), so a renderer that stays
up can be given it before the worker has reported this one.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import zmq
from blake3 import blake3

from farm.agent.capabilities import offered
from farm.agent.emptydir import Folder, Watch
from farm.agent.launch import THREADS_ENV
from farm.agent.workdir import CurrentFolder, count_chdirs
from farm.agent.wresults import packed
from farm.errors import FarmError, JobFailedForGood, ProtocolError, RenderError
from farm.mediatype import Job, RenderContext
from farm.plugins import get_media_type
from farm.proc import die_with_parent, parent_from_env
from farm.project import Project
from farm.protocol import (
    MAX_BODY,
    R_DURATION,
    R_FILES,
    R_LEASE,
    R_LOG,
    JobResult,
    JobSpec,
    Message,
    T,
    pack,
    pack_body,
    unpack,
)
from farm.trace import mark, mark_process_start

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 60
FLUSH_EVERY_S = 0.002  # fast jobs are reported in batches; slow ones one by one
PROGRESS_EVERY_S = 0.25
SEND_WAIT_MS = 1000  # a send that waits this long checks that our agent is still there


class _TailHandler(logging.Handler):
    """Keeps the last log lines of the job running now, for its report."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Worker:
    def __init__(self, endpoint: str, slot: int, scratch: Path) -> None:
        self.zctx = zmq.Context()
        self.sock = self.zctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, f"w{slot}".encode())
        self.sock.setsockopt(zmq.SNDTIMEO, SEND_WAIT_MS)
        self.sock.connect(endpoint)
        # the agent's pid as it told us: an agent that died while we started is no parent of ours
        self.parent = parent_from_env() or os.getppid()
        self.scratch = scratch
        self.contexts: dict[str, tuple[Any, RenderContext, Project]] = {}
        self.projects: dict[str, dict[str, Any]] = {}  # as the agent passed them on: checked per job
        self.out_dir, self.work_dir = scratch / "out", scratch / "work"
        self.out_dirty = True  # unknown until the first job has run
        # the last job's last look at the output folder found its work folder unchanged too: the next
        # job of the batch starts without another (one inotify queue for both: farm.agent.emptydir)
        self.work_settled = False
        self.watch = Watch()  # the folders' emptiness, answered without listing them (farm.agent.emptydir)
        self.out, self.work = Folder(self.out_dir, self.watch), Folder(self.work_dir, self.watch)
        self.cwd = CurrentFolder(self.work)  # each job's current folder (farm.agent.workdir)
        # the batch being run and the index in it of the job rendering now (`_progress`, `_next_job`)
        self.batch: list[JobSpec] = []
        self.index = 0
        self.progress_of: JobSpec | None = None  # the job whose progress was sent last, and when
        self.progress_at = 0.0
        # bound once: a job's context gets these, not a closure made per job
        self.report_progress, self.next_job = self._progress, self._next_job
        self.threads = 1  # the CPU share of each slot, as the agent says
        # a W_JOBS taken from the socket by `_upcoming`, which `serve` runs next; and it read (None: bad)
        self.early: list[bytes] | None = None
        self.early_msg: Message | None = None
        self.tail = _TailHandler()
        logging.getLogger().addHandler(self.tail)
        logging.getLogger().setLevel(logging.INFO)

    def send(self, kind: T, body: dict[str, Any], payloads: list[bytes] | None = None) -> None:
        self.send_frames(pack(kind, body, payloads or ()))

    def send_frames(self, frames: list[bytes]) -> None:
        while True:  # a full queue to a dead agent would block for ever
            try:
                self.sock.send_multipart(frames)
                return
            except zmq.Again:
                self._exit_if_orphaned()

    def _exit_if_orphaned(self) -> None:
        if os.getppid() != self.parent:  # our agent is gone: nobody will read our results
            raise SystemExit(0)

    def serve(self) -> None:
        # what this process holds before its first job (farm, pyzmq, a prewarmed renderer's plugin)
        # lives as long as it does: out of the collector's full walks (~0.35 us of a no-op job's
        # CPU: ~23,000 objects walked at each); the young collections, what a job's garbage needs,
        # run as ever
        gc.collect()
        gc.freeze()
        self.send(T.W_READY, {"pid": os.getpid()})
        while True:
            frames, self.early = self.early, None
            if frames is None:
                if not self.sock.poll(1000):
                    self._exit_if_orphaned()
                    continue
                frames = self.sock.recv_multipart()
            msg = _jobs(frames)  # our parent's word: a bad one is a bug, and ends us
            for pid, wire in msg.body["projects"].items():
                self.projects[pid] = wire
                self.contexts.pop(pid, None)
            self.threads = msg.body["threads"]
            self.run_batch(JobSpec.from_rows(msg.body["jobs"]))
            self._tidy()

    def _progress(self, fraction: float) -> None:
        """`RenderContext.progress` of the job rendering now: sent at most every `PROGRESS_EVERY_S`,
        its first call at once."""
        spec, now = self.batch[self.index], time.monotonic()
        if spec is not self.progress_of or now - self.progress_at >= PROGRESS_EVERY_S:
            self.progress_of, self.progress_at = spec, now
            self.send(T.W_PROGRESS, {"lease": spec.lease, "fraction": float(fraction)})

    def _next_job(self) -> Job | None:
        """`RenderContext.upcoming` of the job rendering now (`_upcoming`)."""
        batch, following = self.batch, self.index + 1
        return self._upcoming(batch[following - 1], batch[following] if following < len(batch) else None)

    def _upcoming(self, current: JobSpec, following: JobSpec | None) -> Job | None:
        """The job this worker runs after ``current``, if it is known now and renders in the same
        context: the same project, not described anew, the same threads, and no dependencies
        (their results come with it). ``following``: the next of ``current``'s batch; else the
        first of the batch after it, taken from the socket now if it is there (`serve` runs it next)."""
        if following is not None:
            nxt, threads, described = following, self.threads, False
        else:
            if self.early is None:
                if not self.sock.poll(0):
                    return None
                self.early = self.sock.recv_multipart()
                try:
                    self.early_msg = _jobs(self.early)
                except (ProtocolError, RuntimeError):  # not this job's fault: `serve` reads it again, ends
                    self.early_msg = None
            if self.early_msg is None:
                return None
            body = self.early_msg.body
            if not body["jobs"]:
                return None
            nxt = JobSpec._make(body["jobs"][0])
            threads, described = body["threads"], nxt.project in body["projects"]
        if nxt.project != current.project or described or threads != self.threads or nxt.deps:
            return None
        return Job(nxt.key, nxt.params)

    def _tidy(self) -> None:
        """Empty the job folders while the results travel and the next job comes back, so that
        job starts without removing the last one's files (a frame job's hand-over is ~10 ms)."""
        if self.out_dirty:
            self.out.clear()
            self.out_dirty = False
        self.work.clear()
        # set their watches now: the next job's emptiness checks are one read each
        self.out.is_empty()
        self.work.is_empty()

    def run_batch(self, jobs: list[JobSpec]) -> None:
        """Run the jobs in order, sending their results in batches (at least every `FLUSH_EVERY_S`,
        and at once after a job with files)."""
        pending: list[list[Any]] = []
        payloads: list[bytes] = []
        self.index, self.batch = 0, jobs
        monotonic = time.monotonic
        # one clock reading per job: a job ends when the next starts (the worker's own few
        # microseconds between them count in its duration)
        last_flush = started = monotonic()
        self.work_settled = False  # looked at again after any pause: its first job's look is its own
        for i, spec in enumerate(jobs):
            self.index = i
            result, files = self.run_one(spec)
            pending.append(result)
            now = monotonic()
            result[R_DURATION] = now - started
            started = now
            if files:
                payloads.extend(files)
            if now - last_flush >= FLUSH_EVERY_S or payloads:
                self._send_results(pending, payloads)
                pending, payloads = [], []
                last_flush = started = monotonic()
                self.work_settled = False
        if pending:
            self._send_results(pending, payloads)

    def _send_results(self, pending: list[list[Any]], payloads: list[bytes]) -> None:
        """Send results; one a plugin's `render` made unsendable (a set, a `Path`, an object)
        fails its job, naming what is wrong, instead of ending this worker with a traceback."""
        try:
            self.send_frames(pack_body(T.W_RESULTS, packed(pending), payloads))
            return
        except (TypeError, ValueError, OverflowError):  # msgpack's refusals, or too big: find whose, below
            pass
        offset = 0
        for wire in pending:
            files = payloads[offset:offset + len(wire[R_FILES])]
            offset += len(files)
            try:
                self.send_frames(pack_body(T.W_RESULTS, packed([wire]), files))
            except (TypeError, ValueError, OverflowError) as exc:
                error = (f"PluginError: the result render returned cannot be sent to the controller "
                         f"({type(exc).__name__}: {exc}): return str, int, float, bool, None, and lists "
                         f"and dicts (with str keys) of those, under {MAX_BODY // 2**20} MiB")
                failed = JobResult(wire[R_LEASE], False, error=error, log=wire[R_LOG], retry=False)
                failed.duration = wire[R_DURATION]
                self.send_frames(pack_body(T.W_RESULTS, packed([failed.to_wire()])))

    def _context(self, project_id: str) -> tuple[Any, RenderContext, Project]:
        """The media type, a render context and the checked project, made once per worker."""
        found = self.contexts.get(project_id)
        if found is None:
            # the settings are made here afresh by the plugin's own checks, on the agent's copy
            wire = self.projects[project_id]
            project = Project.from_wire(wire).reconfigure(Path(wire["root"]))
            ctx = RenderContext(
                project_dir=project.root, output_dir=self.out_dir, work_dir=self.work_dir,
                settings=project.settings, threads=1, cache={}, deps={},
                log=logging.getLogger(f"farm.job.{project.media_type}"),
            )
            mark(f"worker: first job of {project.media_type}")  # loads only that media type's plugin
            found = self.contexts[project_id] = (get_media_type(project.media_type), ctx, project)
        return found

    def run_one(self, spec: JobSpec) -> tuple[list[Any], list[bytes]]:
        """Run one job (``self.batch[self.index]``): its result as a `RESULT_ROW` array
        (`JobResult.to_wire`'s, made without a `JobResult`: this runs for every job; its duration
        is the caller's to set) and its output files' bytes, in the order it names them."""
        lease = spec.lease
        if self.out_dirty:
            self.out.clear()
        if self.work_settled:
            self.work_settled = False
        else:
            self.work.clear()
        self.out_dirty = True
        lines = self.tail.lines
        if lines:
            lines.clear()
        try:
            found = self.contexts.get(spec.project)
            media, ctx, project = found if found is not None else self._context(spec.project)
            ctx.threads = self.threads
            deps = spec.deps
            ctx.deps = deps = {} if deps is None else deps  # a controller may send None for none
            ctx.progress, ctx.upcoming = self.report_progress, self.next_job
            self.cwd.enter()
            result = media.render(_job(spec.key, spec.params, tuple(deps) if deps else ()), ctx)
            files = self.out.files()
            payloads = []
            if files:  # none: the common no-output job skips the size check and reads
                _check_size(files, project.max_output)  # before reading them in
                payloads = [p.read_bytes() for p in files]
                # name, size and digest: the controller verifies every file before the job counts as done
                out_dir = self.out_dir
                entries = [[p.relative_to(out_dir).as_posix(), len(data), blake3(data).digest()]
                           for p, data in zip(files, payloads, strict=True)]
                reply = [lease, True, result, entries, None, None, 0.0, False, True]
            else:
                # that look read the queue of both folders' events: none came for the work folder
                self.out_dirty, self.work_settled = False, self.work.known_empty
                reply = [lease, True, result, [], None, None, 0.0, False, True]
            if lines:  # its log tail travels with success too: every job's log is readable (farm logs)
                text = "\n".join(lines)[-16000:]
                if text:
                    reply[R_LOG] = text
        except BaseException as exc:  # any failure fails this job only
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            log = "\n".join([*lines, traceback.format_exc()])
            reply = JobResult(lease, False, error=f"{type(exc).__name__}: {exc}", log=log[-16000:],
                              retry=not isinstance(exc, JobFailedForGood)).to_wire()
            payloads = []
        return reply, payloads


_new = object.__new__


def _job(key: str, params: Any, deps: tuple[str, ...]) -> Job:
    """``Job(key, params, deps=deps)`` without the frozen dataclass's `object.__setattr__` per field
    (0.9 us of a no-op job's ~6 in this process): the same fields, values and defaults
    (`tests/test_dispatch_agentpath.py` holds it to `Job`'s own)."""
    job = _new(Job)
    fields = job.__dict__
    fields["key"] = key
    fields["params"] = params
    fields["inputs"] = None
    fields["deps"] = deps
    fields["units"] = 1
    return job


def _jobs(frames: list[bytes]) -> Message:
    """The W_JOBS message in ``frames``; raises `ProtocolError` or RuntimeError for anything else."""
    msg = unpack(frames)
    if msg.type is not T.W_JOBS:
        raise RuntimeError(f"the agent sent {msg.type.name}, not W_JOBS")
    return msg


def _check_size(files: list[Path], limit: int) -> None:
    size = sum(p.stat().st_size for p in files)
    if size > limit:
        raise RenderError(f"the job wrote {size / 2**20:.1f} MiB of outputs, over its limit of "
                          f"{limit / 2**20:.1f} MiB ([jobs] max_output_mib)")


def prewarm(work_dir: Path) -> None:
    """Let the one media type this worker's agent offers start its renderer now, before any job
    (`MediaType.prewarm`); an agent that offers several starts none ahead."""
    names = offered()
    if names is None or len(names) != 1:
        return
    try:
        media = get_media_type(names[0])
    except FarmError:  # a name no plugin has (a typo in farm.toml): the agent says so, once
        return
    try:
        media.prewarm(work_dir, max(1, int(os.environ.get(THREADS_ENV, "1"))))
    except Exception:  # the first job starts it, and says what is wrong
        log.warning("could not start %s's renderer ahead of the first job", names[0], exc_info=True)


def main(argv: list[str]) -> None:
    mark_process_start("farm worker")
    endpoint, slot, scratch = argv[0], int(argv[1]), Path(argv[2])
    # SIGKILL when the agent dies, however it dies; our renderers follow us the same way
    die_with_parent(parent_from_env())
    scratch.mkdir(parents=True, exist_ok=True)
    count_chdirs()  # before any plugin is imported (farm.agent.workdir)
    os.chdir(scratch)
    prewarm(scratch / "work")
    Worker(endpoint, slot, scratch).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
