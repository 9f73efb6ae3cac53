"""One project being rendered: its job stream, leases, retries, dependencies and collation.

Jobs are pulled lazily from the media type's generator, so memory holds only the jobs
in flight, waiting for a retry, or waiting on a dependency, however many jobs exist.
"""

from __future__ import annotations

import collections
import copy
import itertools
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

from farm.controller import leasing
from farm.controller.chunking import AdaptiveChunks
from farm.controller.collator import Pending, collate_inline, reuse
from farm.controller.events import EventBus
from farm.controller.jobcache import JobCache, cache_key
from farm.controller.joblogs import JobLogs
from farm.controller.joblogstore import JobLogStore
from farm.controller.lease import Failure, Lease
from farm.controller.outcome import JobKeys
from farm.controller.outputfolder import OutputFolder
from farm.controller.policy import Conduct
from farm.controller.registry import AgentState
from farm.controller.report import RunLog, RunReport, first_line
from farm.controller.resume import resume
from farm.controller.units import UnitCounter
from farm.filesync.errors import source_edited
from farm.journal import Journal
from farm.mediatype import CollateContext, Job, MediaType
from farm.preview import RunFacts
from farm.project import Project

log = logging.getLogger(__name__)

LOST_LIMIT_FACTOR = 3  # a job lost with its agent this many times max_attempts fails for good
RETRY_SCAN = 64  # how deep to look in the retry queue for a job this agent has not had
MAX_REUSE_PER_TURN = 256  # re-collations per dispatch turn, so the loop keeps answering heartbeats
_REUSED, _RENDERED = MappingProxyType({"reused": True}), MappingProxyType({"reused": False})  # job.done data


def _unheard(*args: Any) -> None:
    """Where a run without an event bus (a test's) announces things."""


class ProjectRun(RunReport):
    def __init__(self, run_id: str, project: Project, media: MediaType, journal: Journal, *,
                 priority: int = 0, events: EventBus | None = None, logs: JobLogStore | None = None) -> None:
        self.id = run_id
        self.emit = events.publish if events is not None else _unheard  # (type, run, job, agent, data)
        self.emit_many = events.publish_jobs if events is not None else _unheard  # (type, run, agent, jobs)
        self.emit_each = events.publish_each if events is not None else _unheard  # (type, run, agent, jobs)
        self.starting: leasing.Starting | None = None  # leases `take_new` made, not recorded (`_pull`)
        self.journal = journal
        self.identity = project.identity()
        self.project = project
        self.media = media
        self.priority = priority
        self.timeout = project.timeout or media.default_timeout
        self.state = "running"
        self.paused = False  # live control: lease nothing new (farm.controller.control)
        self.logs = JobLogs(store=logs, run=run_id)  # each job's recent attempts, for people (on disk in logs)
        self.error: str | None = None
        self.submitted = time.time()
        self.started_mono = time.monotonic()
        self.elapsed_before = 0.0  # a resumed run: wall seconds from its submit to this start (downtime too)
        self.finished_mono: float | None = None
        self.first_dispatch_s: float | None = None
        self.outcomes = {o: JobKeys(journal, run_id, o) for o in ("done", "failed", "reused")}
        self.collate_log = RunLog(logging.getLogger(f"farm.collate.{media.name}"))  # its warnings: notes
        self.ctx = CollateContext(project, project.output_dir, {}, self.collate_log, **self.outcomes)
        # for other threads (the dashboard's previews): fixed for the run, settings copied read-only
        settings = MappingProxyType(copy.deepcopy(dict(project.settings)))
        self.facts = RunFacts(run_id, project.name, media, settings, project.output_dir, self.submitted)
        try:
            self.total: int | None = media.count(project)
        except Exception as exc:
            log.warning("%s: count() failed: %r; progress will have no total", project.name, exc)
            self.total = None
        self.units = UnitCounter(media, project)  # progress in tiles, frames, seconds: farm.controller.units
        self._jobs: Iterator[Job] = iter(())
        # job sizes from measured times, for media types that group units (farm.controller.chunking)
        self.chunks = AdaptiveChunks(project.target, self._known) if media.adaptive_chunks else None
        try:
            self._jobs = iter(media.split(project, self.chunks) if self.chunks else media.split(project))
        except Exception as exc:
            leasing.split_failed(self, exc)
        self.exhausted = False
        self.ready: collections.deque[Job] = collections.deque()
        self.waiting: dict[str, list[Job]] = {}  # dependency key -> jobs waiting on it
        self.unmet: dict[str, set[str]] = {}  # job key -> dependencies not done yet
        self.leases: dict[str, Lease] = {}  # job key -> current lease
        self.collating: dict[str, Pending] = {}  # job key -> its outputs being collated (collator)
        self.handoff = collate_inline  # where accepted outputs go: the controller's collate thread
        # Done jobs live in the journal; only a resumed run keeps their keys in memory, to skip them.
        before = journal.counts(run_id)
        self.done_keys: set[str] = journal.done_keys(run_id) if before["done"] else set()
        self.attempts: collections.Counter[str] = collections.Counter()
        self.lost: collections.Counter[str] = collections.Counter()
        self.retried_before: dict[str, int] = {}  # job key -> attempts in all before a retry (`retry`)
        self.conduct = Conduct()  # strikes, hand-backs, blocklist: farm.controller.policy
        self.stuck_since: float | None = None  # since when no agent can make progress on it
        # a resumed run keeps what failed for good before the restart: failed, not run again
        self.failures = {f.key: Failure(f.key, f.error, f.log, f.attempts)
                         for f in (journal.failed_jobs(run_id) if before["failed"] else ())}
        # lease ids: unique across runs and controller restarts, cheap to make
        self._lease_prefix = uuid.uuid4().hex[:8]
        self._lease_numbers = itertools.count()
        self.progress: dict[str, float] = {}
        self.done = self.resumed = len(self.done_keys)
        self.reused = before["reused"]
        self.outputs: list[str] = []
        self.assets: dict[str, Any] = {}  # where agents fetch the project's files (file synchroniser)
        self.manifest: Any = None  # the assets' `farm.filesync.Manifest`, for cache keys
        self.assets_digest: str | None = None
        self.cache: JobCache | None = None
        self.cacheable = media.cache_settings(project.settings) is not None
        self.cache_keys: dict[str, str] = {}  # job key -> cache key, for jobs in flight
        self.unreusable: set[str] = set()  # jobs whose cached outputs failed to collate: rendered
        self.plugin_version: str | None = None
        self.uploaded = False  # the project came from a remote submitter, who downloads the outputs
        self.output_made = False  # the output folder was made for this run's collates
        self.output_folder = OutputFolder(project.output_dir)  # which folder that is (outputfolder)
        self.stopped: str | None = None  # why its collates stopped: the controller cannot write (collator)
        self.download: str | None = None
        resume(self)  # what it did before a restart, counted now: a paused run shows it too

    # -- what to run next ---------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.state == "running"

    @property
    def blocklist(self) -> dict[str, str]:
        """Agent id -> why it gets no more of this run's jobs."""
        return self.conduct.blocklist

    def eligible(self, agent: AgentState) -> bool:
        return agent.id not in self.blocklist and agent.can_run(self.media.name, self.media.requirements)

    def lift_blocklist(self, agents: list[AgentState]) -> int:
        """Never leave a run without an agent: unblock the able ones when no one else can run it.

        Call when no connected agent is eligible; returns how many are eligible afterwards.
        """
        needs = (self.media.name, self.media.requirements)
        blocked = [a for a in agents if a.id in self.blocklist and a.can_run(*needs)
                   and self.conduct.liftable(a.id)]
        for agent in blocked:
            log.warning("%s: lifting the blocklist of agent %s (%s): no other connected agent can run this "
                        "project", self.project.name, agent.id, self.blocklist[agent.id])
        self.conduct.lift([a.id for a in blocked])
        return len(blocked)

    def take(self, agent: AgentState, n: int, others: int, now: float) -> list[Lease]:
        """Lease up to n jobs to this agent: retries first (preferring ones it has not tried), then new.

        Each job is leased as soon as it is pulled, so a later job can depend on it.
        """
        jobs: list[Lease] = []
        if self.chunks is not None:
            self.chunks.saw(agent.id, agent.slots, others)
        waits = False  # a retry this agent could run waits for a free slot: prefetch nothing new ahead of it
        if self.ready:
            skipped = []
            for _ in range(min(len(self.ready), RETRY_SCAN)):
                if len(jobs) >= n:
                    break
                job = self.ready.popleft()
                queued = len(agent.held) + len(jobs) >= agent.slots
                if self.conduct.skip(job.key, agent.id, others, queued):
                    skipped.append(job)  # leave it for an agent that has not had it, or has a slot free
                    waits = waits or (queued and not self.conduct.skip(job.key, agent.id, others))
                elif not reuse(self, job):
                    jobs.append(self.lease(job, agent, now))
            self.ready.extendleft(reversed(skipped))
        reused = 0
        if not waits and leasing.groupable(self):  # nothing to reuse or size between pulls: a group at a time
            jobs += leasing.take_new(self, agent, n - len(jobs), now)
        while not waits and len(jobs) < n and not self.exhausted and self.active and reused < MAX_REUSE_PER_TURN:
            job = self._pull()
            if job is None:
                continue
            if reuse(self, job):
                reused += 1
            else:
                jobs.append(self.lease(job, agent, now))
        if self.chunks is not None:  # the count changes with the sizes
            self.total = (self.done + len(self.failures) + len(self.leases) + len(self.collating)
                          + len(self.ready) + len(self.unmet) + self.chunks.jobs_left())
        return jobs

    def _known(self, job: Job) -> bool:
        """Done before: in this run (before a restart) or in the job cache (`AdaptiveChunks`)."""
        if job.key in self.done_keys:
            return True
        if self.cache is None or not self.cacheable:
            return False
        key = cache_key(self.media, self.plugin_version, self.project.settings, job, self.manifest,
                        self.assets_digest, self.deps_for(job))
        return key is not None and self.cache.journal.lookup_cache(key) is not None

    def _pull(self) -> Job | None:
        try:
            job = next(self._jobs)
        except StopIteration:
            self.exhausted = True
            return None
        except Exception as exc:
            leasing.split_failed(self, exc)
            return None
        return self.admit(job)

    def admit(self, job: Any, checked: bool = False) -> Job | None:
        """What `split` yielded, to lease now, or None. `checked`: a `Job`, keys good (`plain_split`)."""
        if not (checked or leasing.well_made(self, job)):
            return None
        self.units.seen(job)
        if job.key in self.done_keys:
            self.units.resumed_done(job.key)
            return None
        if job.key in self.failures:  # failed for good before a restart: stays failed, retryable by hand
            if self.failures[job.key].job is None:
                self.failures[job.key].job = job
            self.units.job_failed(job.key)
            return None
        if not job.deps:
            return job
        if self.starting is not None:  # what failing it announces comes after the jobs leased before it
            self.starting.record()
        unmet = set()
        for dep in job.deps:
            if dep in self.failures:
                self._fail_for_good(job.key, f"dependency {dep!r} failed", "", None, job)
                return None
            if not self.journal.is_done(self.id, dep):
                if (dep not in self.leases and dep not in self.unmet and dep not in self.collating
                        and not any(j.key == dep for j in self.ready)):
                    self._fail_project(f"job {job.key!r} depends on {dep!r}, which was not yielded before it")
                    return None
                unmet.add(dep)
        if unmet:
            self.unmet[job.key] = unmet
            for dep in unmet:
                self.waiting.setdefault(dep, []).append(job)
            return None
        return job

    def lease(self, job: Job, agent: AgentState, now: float) -> Lease:
        if self.first_dispatch_s is None:
            self.first_dispatch_s = max(0.0, now - self.started_mono)  # `now` may predate a resumed run's start
            self.emit("run.started", self.id)
        lease_id = f"{self._lease_prefix}{next(self._lease_numbers):x}"
        self.emit("job.started", self.id, job.key, agent.id, {"lease": lease_id})
        lease = Lease(lease_id, self, job, agent.identity, agent.id, now, now + self.timeout)
        self.leases[job.key] = lease
        self.journal.job_started(self.id, job.key, lease_id, agent.id)
        return lease

    def deps_for(self, job: Job) -> dict[str, Any]:
        return {d: self.journal.result(self.id, d) for d in job.deps} if job.deps else {}

    # -- outcomes ---------------------------------------------------------------------

    def is_current(self, lease: Lease) -> bool:
        return self.leases.get(lease.job.key) is lease

    def succeeded(self, lease: Lease, result: Any, outputs: dict[str, Path], *,
                  agent: AgentState | None = None, staging: Path | None = None) -> None:
        """Accept a current lease's outputs: collated by `handoff`, the job done once that returns (`collated`).

        `staging`: the folder holding them, removed after the collate.
        """
        key = lease.job.key
        if self.chunks is not None and lease.result is not None:
            self.chunks.record(lease.agent_id, lease.job.units, lease.result.duration)
        if self.cache is not None and key in self.cache_keys:
            self.cache.store(self.cache_keys[key], outputs)  # before collate moves them
        del self.leases[key]
        self.progress.pop(key, None)
        self.hand_over(Pending(self, lease.job, result, outputs, lease, agent, staging))

    def hand_over(self, pending: Pending) -> None:
        self.collating[pending.job.key] = pending  # neither in flight nor to dispatch, until collated
        self.handoff(pending)

    def collated(self, lease: Lease, result: Any) -> None:
        """On the loop: a rendered job's collate returned (`farm.controller.collator.settle`): it is done."""
        self._attempt(lease, "done", None)
        for agent in self.conduct.succeeded(lease.job.key, lease.agent_id):
            self._blocklisted(agent, self.blocklist[agent])
        self._done(lease.job.key, result, lease.agent_id)

    def _blocklisted(self, agent: str, why: str) -> None:
        log.warning("%s: agent %s %s; no more jobs of this project go to it", self.project.name, agent, why)
        self.emit("agent.blocklisted", self.id, None, agent, {"reason": why})

    def done_reused(self, key: str, result: Any) -> None:
        self.reused += 1
        self.emit("job.reused", self.id, key)
        self._done(key, result, None, reused=True)

    def _done(self, key: str, result: Any, agent: str | None, *, reused: bool = False) -> None:
        self.journal.job_done(self.id, key, result, self.cache_keys.pop(key, None), reused=reused)
        self.outcomes["done"].add(key)
        self.outcomes["failed"].discard(key)
        if reused:
            self.outcomes["reused"].add(key)
        self.done += 1
        self.units.job_done(key)
        self.emit("job.done", self.id, key, agent, _REUSED if reused else _RENDERED)
        self.release(key)

    def release(self, key: str) -> None:
        """Job `key` is done: the jobs waiting on it are ready once nothing else they wait on is left."""
        for job in self.waiting.pop(key, ()) if self.waiting else ():
            unmet = self.unmet[job.key]
            unmet.discard(key)
            if not unmet:
                del self.unmet[job.key]
                self.ready.append(job)

    def failed(self, lease: Lease, error: str, log_text: str, *, retry: bool = True) -> None:
        """An attempt failed; retried up to max_attempts, unless `retry` is False (the plugin's verdict)."""
        key = lease.job.key
        del self.leases[key]
        self.progress.pop(key, None)
        self.attempts[key] += 1
        self._attempt(lease, "failed", error, log_text)
        self.conduct.failed(key, lease.agent_id)
        if not retry or self.attempts[key] >= self.project.max_attempts:
            self._fail_for_good(key, error, log_text, lease.agent_id, lease.job)
            if not retry and self.error is None and source_edited(error):
                self.abort(error)  # no agent can fetch that file: the run stops, its other jobs unleased
        else:
            log.info("%s: job %s failed (attempt %d of %d): %s", self.project.name, key,
                     self.attempts[key], self.project.max_attempts, error)
            self.emit("job.retried", self.id, key, lease.agent_id,
                      {"reason": error, "attempt": self.attempts[key], "counted": True})
            self.ready.append(lease.job)

    def lost_lease(self, lease: Lease, reason: str) -> None:
        """The agent went away: run the job again elsewhere, without counting an attempt."""
        self.conduct.lost(lease.job.key, lease.agent_id)
        self._attempt(lease, "lost", reason)
        self._requeue(lease, reason)

    def handed_back(self, lease: Lease, reason: str) -> None:
        """The agent returned the job unstarted: again elsewhere, at no attempt, but at the agent's cost."""
        blocked = self.conduct.handed_back(lease.job.key, lease.agent_id, reason)
        self._attempt(lease, "requeued", reason)
        if blocked:
            self._blocklisted(lease.agent_id, blocked)
        self._requeue(lease, reason)

    def _requeue(self, lease: Lease, reason: str) -> None:
        key = lease.job.key
        del self.leases[key]
        self.progress.pop(key, None)
        self.lost[key] += 1
        if self.lost[key] >= self.project.max_attempts * LOST_LIMIT_FACTOR:
            self._fail_for_good(key, f"lost {self.lost[key]} times with its agent ({reason})", "", lease.agent_id,
                                lease.job)
        else:
            self.emit("job.retried", self.id, key, lease.agent_id, {"reason": reason, "counted": False})
            self.ready.appendleft(lease.job)

    def _fail_for_good(self, key: str, error: str, log_text: str, agent: str | None = None,
                       job: Job | None = None) -> None:
        self.cache_keys.pop(key, None)
        self.conduct.failed_for_good(key)
        tries = max(self.logs.numbered(key),  # attempts in all, as its log numbers them (before a retry too)
                    self.retried_before.get(key, 0) + self.attempts[key] + self.lost[key])
        self.failures[key] = Failure(key, error, log_text, tries, job, agent)
        self.units.job_failed(key)
        self.journal.job_failed(self.id, key, error, log_text, tries, self.logs.duration(key))
        self.outcomes["failed"].add(key)
        log.warning("%s: job %s failed for good: %s", self.project.name, key,
                    first_line(error, self.logs_at(key)))
        self.emit("job.failed", self.id, key, agent, {"error": error, "attempts": tries})
        for job in self.waiting.pop(key, []):
            self.unmet.pop(job.key, None)
            self._fail_for_good(job.key, f"dependency {key!r} failed", "", None, job)

    def _attempt(self, lease: Lease, state: str, error: str | None, log_text: str | None = None) -> None:
        """Keep this attempt's outcome and log tail for people (`JobLogs`)."""
        report = lease.result
        self.logs.note(lease.job.key, lease.agent_id, state, error,
                       report.duration if report is not None else time.monotonic() - lease.started,
                       (report.log if report is not None else None) or log_text)

    def retry(self, keys: list[str] | None) -> list[str]:
        """Run jobs that failed for good again, each with fresh attempts; returns the keys requeued.

        `keys`: all failed jobs if None, else those of them (the caller checks they failed). A job
        whose dependency stays failed stays failed; one whose dependency is retried waits for it.
        A finished run must be reopened by the caller (`reopen`).
        """
        wanted = None if keys is None else set(keys)
        chosen = [key for key in self.failures if wanted is None or key in wanted]  # dependencies first
        failures = {key: self.failures.pop(key) for key in chosen}
        retried = []
        for key, failure in failures.items():
            job = failure.job
            unmet = {d for d in job.deps if not self.journal.is_done(self.id, d)} if job is not None else set()
            if job is None or unmet & self.failures.keys():
                self.failures[key] = failure  # nothing to run, or its dependency stays failed
                continue
            self.attempts.pop(key, None)
            self.lost.pop(key, None)
            self.retried_before[key] = failure.attempts
            self.emit("job.retried", self.id, key, None, {"reason": "retried on request", "manual": True,
                                                         "counted": False})
            if unmet:
                self.unmet[key] = unmet
                for dep in unmet:
                    self.waiting.setdefault(dep, []).append(job)
            else:
                self.ready.append(job)
            retried.append(key)
        return retried

    def reopen(self) -> None:
        """A finished run with jobs to run again (a retry) runs again, and will finish again."""
        self.state = "running"
        self.finished_mono = None
        self.outputs = []
        self.output_made = False

    def _fail_project(self, error: str) -> None:
        log.error("%s: %s", self.project.name, error)
        self.error = error
        self.exhausted = True

    def abort(self, error: str) -> None:
        """End a run no agent can make progress on: it fails with `error` once nothing is in flight."""
        self._fail_project(error)
        self.ready.clear()
        self.waiting.clear()
        self.unmet.clear()

    def cancel(self) -> list[Lease]:
        self.state = "cancelled"
        self.finished_mono = time.monotonic()
        leases = list(self.leases.values())
        self.leases.clear()
        self.progress.clear()  # their partial frames or tiles never will be done: no part of the count
        self.collating.clear()  # what comes back is dropped; what has not started is skipped
        return leases

    # -- completion -----------------------------------------------------------------

    def all_in(self) -> bool:
        return self.exhausted and not self.leases and not self.ready and not self.unmet and not self.collating

    def start_finalizing(self) -> None:
        """On the loop, before `finalize` goes to its thread: commit what finalize will read."""
        self.state = "finalizing"
        self.journal.flush()
        for keys in self.outcomes.values():
            keys.settled()

    def finalize(self) -> list[str]:
        """Run the media type's finalize (in a thread of the controller: it may be slow).

        A partial run finalizes too, so the outputs that did succeed are kept and readable; there a
        failing finalize is only logged (quietly if the run stopped for the disk: said already)."""
        try:
            self.project.output_dir.mkdir(parents=True, exist_ok=True)  # also with no jobs, or all reused
            return [str(p) for p in self.media.finalize(self.ctx)]
        except Exception as exc:
            if not (self.error or self.failures):
                raise
            (log.debug if self.stopped else log.warning)(
                "%s: finalize of a partial run failed: %s", self.project.name, exc)
            return []

    def finished(self, outputs: list[str], error: str | None) -> None:
        self.outputs = outputs
        if error:
            self.error = self.error or error
        self.state = "failed" if (self.error or self.failures) else "done"
        self.finished_mono = time.monotonic()
