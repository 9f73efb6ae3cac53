"""Collation off the controller's loop: one thread runs the media types' `collate` calls.

A map job's collate writes 64-1024 tiles and an MBTiles transaction, an audio segment's
writes PCM: on the loop thread that held dispatch and heartbeats for seconds in a run. The
loop now hands each accepted, verified result to this thread (`submit`; `flush` sends them
in batches, and a turn without results costs nothing) and goes on; the outcome comes
back to the loop (`deliver`, woken through an inproc PAIR socket the loop polls), and only
there is the job journaled done, its `job.done` event sent and its units counted
(`ProjectRun.collated`). So a controller killed while a collate runs renders that job again
after a restart, as before.

One thread, so collates never run concurrently with each other and run in the order the
loop accepted their results; `finalize` starts only once every accepted collate of its run
has come back (`ProjectRun.all_in` counts the jobs being collated). A cancelled run's
collates not yet started are skipped; one already running finishes, and its job counts as
done (its outputs are in the output folder, whole), after the run's end. What must wait for that collate
(publishing the cancelled run's outputs for download: its files may be half written) waits
in `after_collate`, off the loop's back. `close` stops after the collate running: the rest
of the batch the thread holds is skipped as what is queued.

A collate that fails for the controller's own reason (`own_fault`: it cannot write the output
folder, a full disk, a folder made read-only) is no attempt of the job: the render was good, and
rendering it again would fail the same way. The run stops making that output: the thread
collates none of its results after that one, the loop fails the run once with the folder and the
OS error (`settle`) and withdraws its jobs in flight (the Collator's `stopped`); no job or agent
is blamed. A collate that refuses the job's own files (a RenderError, a truncated image) still
costs the job an attempt.
"""

from __future__ import annotations

import collections
import errno
import logging
import queue
import shutil
import sqlite3
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from farm.causes import cause
from farm.controller.jobcache import cache_key
from farm.controller.outputfolder import REMOVED_CODE, stopped_by
from farm.outputgone import removed, removed_during_run

if TYPE_CHECKING:
    from farm.controller.registry import AgentState
    from farm.controller.run import Lease, ProjectRun
    from farm.mediatype import Job

log = logging.getLogger(__name__)

STOP_WAIT_S = 10.0  # how long `close` waits for a collate that is running
# Results wait this long (or for this many) before going to the thread in one piece: each
# handoff wakes a thread and passes the GIL, which no-op jobs (thousands a second) would feel.
FLUSH_AFTER_S = 0.002
FLUSH_AT = 256
# What says the controller cannot write its own files, whatever job it collates: no render is to blame
OWN_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                        errno.EIO})
DISK_CODE = "controller_disk"  # a summary's `code` when the controller's own disk stopped the run
OWN_SQLITE = frozenset({3, 8, 10, 13})  # SQLITE_PERM, _READONLY, _IOERR, _FULL (a media type's MBTiles)


@dataclass(slots=True)
class Pending:
    """One job's outputs waiting for (or back from) its collate.

    `lease`: the attempt that made them, None for outputs reused from the job cache;
    `staging`: a folder removed once the collate returned; `error`: what the collate
    raised ("TypeName: message"), None if it returned, and `trace` its traceback (the job's log);
    `fault`: why, when that was the controller's own (`own_fault`), for people; `skipped`: its
    run was cancelled, or stopped by such a fault, first.
    """

    run: ProjectRun
    job: Job
    result: Any
    outputs: dict[str, Path]
    lease: Lease | None = None
    agent: AgentState | None = None
    staging: Path | None = None
    error: str | None = None
    trace: str = ""  # the traceback of what it raised: the job's log, as a render's is
    fault: str | None = None
    code: str = DISK_CODE  # the summary's `code` for a fault: REMOVED_CODE for a folder gone
    skipped: bool = False


def collate(pending: Pending) -> None:
    """Run one pending job's collate (in whichever thread calls it) and tidy its staging folder."""
    run = pending.run
    made = False
    try:
        if run.state == "cancelled" or run.stopped is not None:
            pending.skipped = True
            return
        if not run.output_made:  # the lifecycle's promise, every path; once per run, not per job
            run.ctx.output_dir.mkdir(parents=True, exist_ok=True)
            run.output_folder.made()
        run.output_made = False  # until collate returns: a folder removed by hand is made again for a retry
        made = True
        if folder_gone(pending):
            return
        run.media.collate(pending.job, pending.result, pending.outputs, run.ctx)
        run.output_made = True
    except Exception as exc:
        if made and folder_gone(pending):  # what the collate met: not the job's fault
            return
        collate_failed(pending, exc, made)
    finally:
        if pending.staging is not None:
            shutil.rmtree(pending.staging, ignore_errors=True)


def folder_gone(pending: Pending) -> bool:
    """Stop the run when its output folder is not the one its collates wrote to (`OutputFolder`):
    the outputs collated before went with it, so no job is to blame and the run cannot end whole."""
    gone = pending.run.output_folder.gone()
    if gone is None:
        return False
    pending.error = gone
    pending.fault = pending.run.stopped = stopped_by(gone, f"collating job {pending.job.key}")
    pending.code = REMOVED_CODE
    return True


def collate_failed(pending: Pending, exc: Exception, made: bool) -> None:
    """What a collate raised, on its `Pending`: the error, and the fault if it is the controller's own
    (the run's collates after it are skipped). `made`: the output folder was there when it began."""
    run = pending.run
    if (file := removed(exc)) is not None:  # a file the run holds open (an MBTiles file) removed, or
        # replaced: not the disk's fault (SQLite says "readonly"), nor the job's
        pending.error = str(file)
        pending.fault = run.stopped = stopped_by(str(file), f"collating job {pending.job.key}")
        pending.code = REMOVED_CODE
        return
    # a folder removed under the collate: the OS error alone names a tile, or no file (SQLite)
    gone = removed_during_run(run.project.output_dir, exc) if made else None
    pending.error = gone or f"{type(exc).__name__}: {exc}"
    pending.trace = "".join(traceback.format_exception(exc))  # `farm logs`, a summary's failures
    own = own_fault(exc)
    if own is not None:  # the first: the run's collates after it are skipped
        pending.fault = run.stopped = cannot_write(run.project.output_dir, own,
                                                   f"collating job {pending.job.key}", gone)


def own_fault(exc: BaseException) -> BaseException | None:
    """The error in what a collate raised (or in what led to it) that is the controller's own: its
    disk full, a folder it cannot write; None when the job's outputs may be to blame."""
    return cause(exc, _own)


def _own(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in OWN_ERRNOS
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return code is not None and code & 0xFF in OWN_SQLITE  # an extended code's low byte is the primary


def cannot_write(folder: Path, exc: BaseException, doing: str, gone: str | None = None) -> str:
    """Why a run stopped at a collate (or finalize) that failed for the controller's own reason, as
    people read it (`gone`: the folder was removed meanwhile, `removed_during_run`)."""
    if gone is not None:
        return f"{gone}, {doing}; no job is to blame and none is rendered again: submit it again"
    return (f"cannot write the output folder {folder}: {described(exc)}, {doing}; no job is to blame and "
            "none is rendered again: make room or make the folder writable, then submit the project again")


def state_unwritable(folder: Path, exc: BaseException, doing: str) -> str:
    """Why runs stopped when the controller could not write its own state folder (the journal, the
    staging of results), as people read it."""
    return (f"the controller's state folder {folder} cannot be written ({described(exc)}), {doing}; no job "
            "is to blame: make room or make the folder writable, then submit the project again")


def described(exc: BaseException) -> str:
    """An OS or SQLite error in a few words: what, its errno's name, and the path."""
    if isinstance(exc, OSError):
        why = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno, exc.errno)})"
        if exc.filename is not None:  # a rename's is where from, its filename2 where to
            why += f": {exc.filename if exc.filename2 is None else exc.filename2}"
        return why
    return f"{type(exc).__name__}: {exc}"


def reuse(run: ProjectRun, job: Job) -> bool:
    """Collate a finished identical job's stored outputs (the job cache) instead of rendering this one."""
    if run.cache is None or not run.cacheable or job.key in run.unreusable:
        return False
    key = cache_key(run.media, run.plugin_version, run.project.settings, job, run.manifest,
                    run.assets_digest, run.deps_for(job))
    if key is None:
        return False
    run.cache_keys[job.key] = key
    staging = run.cache.folder / "staging" / uuid.uuid4().hex
    try:
        hit = run.cache.restore(key, staging)
    except Exception as exc:  # a cache that fails us is only a missed shortcut
        log.warning("%s: could not reuse %s: %r; rendering it", run.project.name, job.key, exc)
        hit = None
    if hit is None:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    run.hand_over(Pending(run, job, hit[0], hit[1], staging=staging))
    return True


def settle(pending: Pending) -> bool:
    """On the loop: record what a collate did: the job done, failed (an attempt, retried as any
    failure) or, for outputs from the job cache, rendered after all; the agent's counters.

    True when it stopped the run (the controller's own fault): its jobs in flight are to be withdrawn.
    """
    run, key, lease = pending.run, pending.job.key, pending.lease
    if run.collating.get(key) is not pending:  # the run was cancelled meanwhile
        if not (run.state == "cancelled" and not pending.skipped and pending.error is None):
            return False
        # its collate was running and wrote the job's outputs whole: the job is done, as they show
        # (the cancelled run's summary, served once this collate is back, counts it)
    else:
        del run.collating[key]
    if pending.fault is not None:  # no attempt, no blame: the run fails, once, with why
        run.served = {**run.served, "code": pending.code}  # in its summary (`ProjectRun.summary`)
        run.abort(pending.fault if run.error is None else f"{run.error}; then {pending.fault}")
        return True
    if pending.skipped:  # its run stopped first: neither done nor failed
        return False
    run.output_folder.keep(run.journal, run.id)  # before its first job is journaled done
    if pending.agent is not None:
        if pending.error is None:
            pending.agent.done += 1
        else:
            pending.agent.failed += 1
    if lease is None:
        if pending.error is None:
            run.done_reused(key, pending.result)
        else:  # a cache that fails us is only a missed shortcut
            log.warning("%s: could not reuse %s: %s; rendering it", run.project.name, key, pending.error)
            run.unreusable.add(key)
            run.ready.appendleft(pending.job)
    elif pending.error is None:
        run.collated(lease, pending.result)
    else:
        run.leases[key] = lease  # what `failed` settles
        run.failed(lease, f"collating its outputs failed: {pending.error}", pending.trace)
    return False


def collate_inline(pending: Pending) -> bool:
    """A run with no collator thread (a test's own `ProjectRun`): collate and settle at once."""
    collate(pending)
    return settle(pending)


class Collator:
    """The collate thread of one controller; `submit`, `flush` and `deliver` are the loop's.

    `stopped`: called on the loop with a run the controller's own fault stopped (`settle`).
    """

    def __init__(self, context: zmq.Context | None = None, *,
                 stopped: Callable[[ProjectRun], None] | None = None) -> None:
        self.stopped = stopped
        context = context or zmq.Context.instance()
        url = f"inproc://farm-collated-{uuid.uuid4().hex}"
        self.wake = context.socket(zmq.PAIR)  # the loop polls it: something came back
        self.wake.bind(url)
        self._ring = context.socket(zmq.PAIR)  # the thread's end (made here, used there alone)
        self._ring.connect(url)
        self._batch: list[Pending] = []  # accepted, not handed over yet
        self._since = 0.0  # when the first of them was accepted
        self._todo: queue.SimpleQueue[list[Pending] | None] = queue.SimpleQueue()
        self._back: collections.deque[Pending] = collections.deque()
        # the loop is (about to be) blocked in its poll: the thread wakes it (`before_poll`)
        self.sleeping = False
        self._rang = False  # a wake-up was sent: the loop reads it off the socket
        self.pending = 0  # submitted and not delivered yet
        self.running: Pending | None = None  # the thread's collate now (set before it reads run.state)
        self._after: list[tuple[Pending, Callable[[], None]]] = []  # (the collate awaited, then)
        self._closing = False  # `close` began: the thread collates nothing more
        self._thread = threading.Thread(target=self._work, name="farm-collate", daemon=True)
        self._thread.start()

    def submit(self, pending: Pending) -> None:
        """Queue a job's collate; it goes to the thread with others (`flush`).

        A result without output files, while nothing else waits, is collated here at once: no
        files to write, and a handoff would cost no-op jobs (thousands a second) more than the
        collate does; the order and one-at-a-time promises hold, the thread being idle.
        """
        if not pending.outputs and self.idle:
            if collate_inline(pending) and self.stopped is not None:
                self.stopped(pending.run)
            return
        if not self._batch:
            self._since = time.monotonic()
        self._batch.append(pending)

    @property
    def idle(self) -> bool:
        """Nothing waits for the thread or is under way there: a collate on the loop now keeps the order."""
        return not self._batch and not self.pending

    def flush(self, now: float) -> None:
        """At the end of a loop turn: hand the accepted results to the thread in one piece, once
        the first has waited `FLUSH_AFTER_S` or `FLUSH_AT` are in."""
        if not self._batch or (now - self._since < FLUSH_AFTER_S and len(self._batch) < FLUSH_AT):
            return
        batch, self._batch = self._batch, []
        for run in {p.run.id: p.run for p in batch}.values():
            for keys in run.outcomes.values():
                keys.prime()  # outcome sets a collate asked for: loaded here, where the journal lives
        self.pending += len(batch)
        self._todo.put(batch)

    def before_poll(self, wait_ms: int) -> int:
        """On the loop, before it polls: how long it may block (0 if a collate came back).

        A wake-up is sent only while the loop sleeps: a busy loop looks each turn anyway. The
        flag is set before `_back` is read, and the thread appends before it reads the flag, so
        either the loop sees the outcome here or the thread sees it sleeping.
        """
        self.sleeping = True
        if self._back:
            return 0
        if self._batch:  # wake for the flush
            return min(wait_ms, max(1, int((self._since + FLUSH_AFTER_S - time.monotonic()) * 1000) + 1))
        return wait_ms

    def deliver(self) -> int:
        """On the loop, after its poll: settle the collates that came back; returns how many."""
        self.sleeping = False
        if self._rang:
            self._rang = False
            try:
                while True:
                    self.wake.recv(zmq.NOBLOCK)
            except zmq.Again:
                pass
        if not self._back:
            return 0
        count = 0
        while self._back:
            pending = self._back.popleft()
            self.pending -= 1
            count += 1
            if settle(pending) and self.stopped is not None:
                self.stopped(pending.run)
            if self._after:
                self._call_after(pending)
        return count

    def after_collate(self, run: ProjectRun, then: Callable[[], None]) -> None:
        """On the loop: call ``then`` once no collate of ``run`` is running: now, or from `deliver`
        when the one running comes back. For a cancelled run, whose collates not started are
        skipped, ``then`` sees its output folder as it stays."""
        running = self.running  # the thread sets it before it reads run.state, which the caller set
        if running is None or running.run is not run:
            then()
        else:
            self._after.append((running, then))

    def _call_after(self, pending: Pending) -> None:
        waiting = [then for p, then in self._after if p is pending]
        if waiting:
            self._after = [(p, then) for p, then in self._after if p is not pending]
            for then in waiting:
                then()

    def _work(self) -> None:
        while True:
            batch = self._todo.get()
            if batch is None:
                return
            for pending in batch:
                if self._closing:  # as for what is queued: not collated, its staging removed
                    if pending.staging is not None:
                        shutil.rmtree(pending.staging, ignore_errors=True)
                    continue
                self.running = pending
                collate(pending)
                self.running = None
                self._back.append(pending)
                if self.sleeping:
                    self.sleeping = False
                    try:
                        self._ring.send(b"", zmq.NOBLOCK)
                        self._rang = True
                    except zmq.ZMQError:  # the loop has not read the last one: it will look anyway
                        pass

    def close(self) -> None:
        """Stop the thread after the collate it runs (if any); what is queued is not collated
        (those jobs were not journaled done: a restarted controller renders them again), nor is
        the rest of the batch the thread is working through."""
        self._closing = True
        batches = [self._batch]
        while True:
            try:
                batches.append(self._todo.get_nowait())
            except queue.Empty:
                break
        for batch in batches:
            for pending in batch or ():
                if pending.staging is not None:
                    shutil.rmtree(pending.staging, ignore_errors=True)
        self._todo.put(None)
        self._thread.join(STOP_WAIT_S)
        if self._thread.is_alive():  # its send, if it returns, fails quietly on the closed socket
            log.warning("a collate was still running when the controller stopped")
        self._ring.close(linger=0)
        self.wake.close(linger=0)
