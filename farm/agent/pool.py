"""An agent's worker processes: start, feed, kill, restart, and notice a node that cannot start them.

One long-lived child worker per slot (`farm.agent.worker`), on a local ROUTER socket, speaking
the protocol's W_* messages: W_JOBS down (`JobSpec`s as arrays, and the projects new to it),
W_READY, W_PROGRESS and W_RESULTS (`farm.agent.wresults`, outputs as payload frames) up. Each is
checked like a network message. A worker that dies or overruns its head job's timeout is killed
with its process group and started again; that job fails, the jobs queued behind it are handed
back unstarted. Workers that die before they are ready make the node *broken* (`StartWatch`).
What becomes of a job is the agent's business: the pool calls its `Outcomes`.
"""

from __future__ import annotations

import logging
import operator
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import zmq

from farm.agent.drain import drain
from farm.agent.launch import StartWatch, StderrTail, worker_command, worker_env
from farm.agent.scratch import SOCKET
from farm.agent.scratch import claim as claim_scratch
from farm.agent.wresults import read as read_results
from farm.errors import ProtocolError
from farm.protocol import JobResult, JobSpec, T, pack, unpack

log = logging.getLogger(__name__)

WORKER_BATCH_S = 0.002  # fast jobs go to a worker in batches of about this much work
MAX_BATCH = 256
# A batch takes up to a quarter more than its size rather than leave a tail that small to a batch of
# its own: an agent holds its prefetch plus a job per slot (256 + 1), and the 257th job went alone,
# with a W_JOBS, W_RESULTS, RESULTS and JOBS message (and a turn of each process) of its own per window.
BATCH_SLACK = 4
_SPEC_LEASE, _PROJECT = operator.attrgetter("lease"), operator.attrgetter("project")  # of a JobSpec


class Outcomes(Protocol):
    """What the pool tells its agent."""

    def fail(self, job: JobSpec, error: str, *, duration: float = 0.0) -> None: ...  # seconds it ran
    def hand_back(self, job: JobSpec, why: str) -> None: ...
    def deliver(self, result: JobResult, files: list[bytes], project: str) -> None: ...
    def forward(self, body: bytes, leases: list[str], projects: list[str]) -> None: ...
    def progress(self, lease: str, fraction: float) -> None: ...
    def report_state(self) -> None: ...  # the node became broken, or mended


@dataclass
class Slot:
    """One child worker process and the jobs it is running."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False
    # Jobs sent to the worker, in the order it runs them: the head is running, the rest wait in
    # its socket, so the worker goes from one job to the next without waiting for us.
    running: list[JobSpec] = field(default_factory=list)
    head_since: float = 0.0  # when the head job started, as far as we can tell
    projects: set[str] = field(default_factory=set)
    greeted: bool = False  # it said W_READY once: a later exit is a crash, not a failure to start
    stderr: StderrTail | None = None
    restart_at: float = 0.0  # when a broken node starts this slot's worker again (proc is None meanwhile)
    killed: bool = False  # this agent killed it (a cancel, a timeout): its exit is no fault to report


class Pool:
    # `outcomes` may be given later (`EarlyWorkers`), as long as it is before the agent polls us
    def __init__(self, nslots: int, scratch: Path, zctx: zmq.Context, outcomes: Outcomes) -> None:
        self.scratch = scratch
        self.zctx = zctx
        self.outcomes = outcomes
        self.slots = [Slot(i) for i in range(nslots)]
        self.threads = max(1, (os.cpu_count() or 1) // nslots)  # each job's CPU share
        self.endpoint = f"ipc://{scratch}/{SOCKET}"
        self.socket: zmq.Socket | None = None
        self.starts = StartWatch()
        self.avg_job_s = 1.0
        self.bad_messages = 0

    @property
    def broken(self) -> str | None:
        """Why this node cannot run anything (its workers die before they are ready), if so."""
        return self.starts.broken

    def start(self) -> None:
        """Bind the workers' socket and start one worker per slot; a second call does nothing."""
        if self.socket is not None:
            return
        self.socket = self.zctx.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(self.endpoint)
        for slot in self.slots:
            self._start_worker(slot)

    def close(self) -> None:
        for slot in self.slots:
            self.kill(slot)
        if self.socket is not None:
            self.socket.close(linger=0)

    def _start_worker(self, slot: Slot) -> None:
        folder = self.scratch / f"slot{slot.index}"
        slot.proc = subprocess.Popen(
            worker_command(self.endpoint, slot.index, folder), cwd=self.scratch, env=worker_env(self.threads),
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills the whole tree it started
        )
        assert slot.proc.stderr is not None
        slot.stderr = StderrTail(slot.proc.stderr)
        slot.ready = slot.greeted = slot.killed = False
        slot.running = []
        slot.projects = set()

    def kill(self, slot: Slot) -> None:
        if slot.proc is not None and slot.proc.poll() is None:
            try:
                os.killpg(slot.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            slot.proc.wait()
            slot.killed = True
        slot.ready = False

    def check(self, now: float, stopping: bool) -> None:
        """Restart workers that died, kill those that overran their job's timeout."""
        for slot in self.slots:
            if slot.proc is None:  # a broken node waits before trying this worker again
                if now >= slot.restart_at:
                    self._start_worker(slot)
                continue
            code = slot.proc.poll()
            if code is None and slot.running and now > slot.head_since + slot.running[0].timeout:
                head, *rest = slot.running
                log.warning("job %s overran its %gs timeout; killing its worker", head.key, head.timeout)
                self.kill(slot)
                why = f"timed out after {head.timeout:g}s; its worker and children were killed"
                self.outcomes.fail(head, why, duration=time.monotonic() - slot.head_since)
                for job in rest:
                    self.outcomes.hand_back(job, "its worker was killed for another job's timeout")
                slot.running = []
                code = slot.proc.poll()
            if code is not None:
                if slot.running:
                    head, *rest = slot.running
                    self.outcomes.fail(head, f"worker process died (exit code {code}) while running this job",
                                       duration=max(0.0, time.monotonic() - slot.head_since))
                    for job in rest:
                        self.outcomes.hand_back(job, "its worker died running another job")
                if slot.killed:  # to withdraw its jobs (a cancel) or for a timeout, said already
                    log.debug("worker %d, stopped by this agent, restarts", slot.index)
                elif not slot.greeted and not stopping:
                    self._died_at_start(slot, code)
                elif slot.running or not stopping:
                    log.warning("worker %d exited with code %s; restarting it", slot.index, code)
                if self.starts.delay():
                    slot.proc, slot.ready, slot.restart_at = None, False, now + self.starts.delay()
                else:
                    self._start_worker(slot)

    def _died_at_start(self, slot: Slot, code: int) -> None:
        stderr = slot.stderr.text() if slot.stderr is not None else ""
        log.warning("worker %d died before it was ready (exit code %s)", slot.index, code)
        if self.starts.died_at_start(code, stderr):
            log.error("this node is broken and takes no jobs until a worker starts: %s", self.starts.broken)
            self.outcomes.report_state()

    def feed(self, now: float, take: Callable[[int], list[JobSpec]],
             describe: Callable[[str], dict[str, Any]]) -> None:
        """Give each ready worker a batch (about `WORKER_BATCH_S` of work, at most a quarter more) from
        `take(count)`."""
        for slot in self.slots:
            size = max(1, min(MAX_BATCH, int(WORKER_BATCH_S / max(self.avg_job_s, 1e-6))))
            if not slot.ready or len(slot.running) > size:
                continue  # it has a batch queued behind the one it is running: enough
            batch = take(size + size // BATCH_SLACK)
            if not batch:
                return
            new = set(map(_PROJECT, batch)) - slot.projects
            # the jobs as arrays (`JOB_ROW`): a named tuple packs as one, with no map made per job
            body = {"jobs": batch, "projects": {p: describe(p) for p in new}, "threads": self.threads}
            slot.projects |= new
            if not slot.running:
                slot.head_since = now
            slot.running += batch
            assert self.socket is not None
            self.socket.send_multipart([f"w{slot.index}".encode(), *pack(T.W_JOBS, body)])

    def forget_project(self, project: str) -> None:
        """Workers get a project's description again with their next job of it (it changed)."""
        for slot in self.slots:
            slot.projects.discard(project)

    def cancel(self, leases: set[str]) -> None:
        """Stop the workers running any of these leases; the other jobs they had are handed back."""
        for slot in self.slots:
            if any(j.lease in leases for j in slot.running):
                self.kill(slot)  # restarted by `check`; no result is sent
                for job in slot.running:
                    if job.lease not in leases:
                        self.outcomes.hand_back(job, "its worker was stopped to cancel another job")
                slot.running = []

    def drain(self) -> None:
        """Handle what the workers sent (a bounded number of messages); after a poll found some."""
        assert self.socket is not None
        drain(self.socket, self._on_message)

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            self._on_worker(frames)
        except (ProtocolError, ValueError, IndexError) as exc:  # a worker's bug: its jobs fail by timeout
            self.bad_messages += 1
            if self.bad_messages <= 20 or self.bad_messages % 1000 == 0:
                log.warning("dropping a bad message from a worker: %s", str(exc)[:500])

    def _on_worker(self, frames: list[bytes]) -> None:
        ident, *rest = frames
        slot = self.slots[int(ident[1:])]
        msg = unpack(rest)
        if msg.type is T.W_READY:
            slot.ready = slot.greeted = True
            if self.starts.started():
                log.warning("a worker started again: this node takes jobs again")
                self.outcomes.report_state()
        elif msg.type is T.W_PROGRESS:
            self.outcomes.progress(msg.body["lease"], msg.body["fraction"])
        elif msg.type is T.W_RESULTS:
            body = msg.body
            leases = body["leases"]
            count, running = len(leases), slot.running
            if (not msg.payloads and leases == list(map(_SPEC_LEASE, running[:count]))
                    and len(set(leases)) == count):
                # the common case: no files, the jobs it was given first, in order, each once: its
                # results go on as they came, not even decoded here (farm.agent.wresults)
                done, slot.running = running[:count], running[count:]
                self.avg_job_s = _averaged(self.avg_job_s, body["durations"])
                self.outcomes.forward(body["results"], leases, list(map(_PROJECT, done)))
                if slot.running and count:
                    slot.head_since = time.monotonic()  # the worker moved on to the next job
                return
            by_lease = {j.lease: j for j in running}
            self._deliver(read_results(body), msg.payloads, by_lease)
            head = running[0].lease if running else None
            slot.running = [j for j in running if j.lease in by_lease]
            if slot.running and slot.running[0].lease != head:
                slot.head_since = time.monotonic()  # the worker moved on to the next job
        else:
            raise ProtocolError(f"{msg.type.name} is not a message a worker sends")

    def _deliver(self, results: list[list[Any]], payloads: list[bytes],
                 by_lease: dict[str, JobSpec]) -> None:
        """Hand the agent each result of a job still running here, with its files (`by_lease`: what
        ran, less each job delivered)."""
        offset = 0
        for wire in results:
            result = JobResult.from_wire(wire)
            files = payloads[offset:offset + len(result.files)]
            offset += len(result.files)
            job = by_lease.pop(result.lease, None)
            if job is None:
                continue  # cancelled meanwhile
            self.avg_job_s = 0.8 * self.avg_job_s + 0.2 * result.duration
            self.outcomes.deliver(result, files, job.project)


def _averaged(avg: float, durations: list[float]) -> float:
    """``avg`` moved towards the mean of ``durations`` (seconds) as far as a fifth of the way per duration
    moves it: one step per duration when they are equal, in C loops rather than a Python step per job."""
    count = len(durations)
    if not count:
        return avg
    keep = 0.8 ** count
    return keep * avg + (1.0 - keep) * (sum(durations) / count)


class _NoOutcomes:
    """An early pool's outcomes until its agent takes it over: nothing polls the pool before."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"a pool's {name} before an agent took it over")


class EarlyWorkers:
    """A scratch folder, a ZeroMQ context and a started pool, made before the agent itself.

    A worker takes 0.2-0.4 s to start Python and import farm; an agent process another 0.3-0.5 s
    to import its modules and probe its renderers before it would start them (`bench/bench_startup.py
    --timeline`). `farm.agent.local` starts them first, from these few imports, so both overlap; the
    `Agent` given them (``workers=``) takes them over. Raises `FarmError` as `claim` does."""

    def __init__(self, nslots: int, scratch: Path | None = None) -> None:
        self.hold = claim_scratch(scratch)
        self.zctx = zmq.Context()
        self.pool = Pool(nslots, self.hold.path, self.zctx, _NoOutcomes())  # type: ignore[arg-type]
        try:
            self.pool.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the workers and let the folder go, where no agent took them over."""
        self.pool.close()
        self.zctx.destroy(linger=0)  # and any socket an agent that failed to start left on it
        self.hold.release()
