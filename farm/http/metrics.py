"""``GET /metrics``: Prometheus metrics of one controller, in a registry of its own.

Two sources, neither touching the controller's state from the HTTP thread:

- **counters fed by the event stream** (`Metrics.observe`, registered with
  ``controller.events.observe`` before the controller's loop starts, so they count from its
  first event): ``farm_jobs_done_total`` (rendered or reused), ``farm_jobs_reused_total``,
  ``farm_jobs_failed_total`` (for good), ``farm_jobs_retried_total``, each by ``media_type``,
  and the ``farm_job_duration_seconds`` histogram (dispatch to done, rendered jobs only);
- **gauges read at scrape time** from a status snapshot the controller answers over its
  in-process socket: ``farm_agents{state}``, ``farm_jobs_queued`` and ``farm_jobs_running``
  by ``media_type``, ``farm_runs{state}``; and ``farm_sync_bytes_total{direction}`` from the
  file service's own counters (``in``: uploads received; ``out``: blocks served).
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from farm.controller.events import Event, Published
from farm.http.api import agent_state
from farm.http.backend import Backend

log = logging.getLogger(__name__)

AGENT_STATES = ("active", "draining", "blocklisted", "broken")
RUN_STATES = ("running", "finalizing", "done", "failed", "cancelled")
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
MAX_TRACKED = 100_000  # dispatch times kept for the duration histogram (jobs in flight, all runs)
MAX_RUNS = 10_000  # runs whose media type is remembered


class Metrics:
    """The registry, its event-fed counters, and the scrape-time collectors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["media_type"]
        r = self.registry
        self.done = Counter("farm_jobs_done", "Jobs done, rendered or reused.", labels, registry=r)
        self.reused = Counter("farm_jobs_reused", "Jobs done from the job cache, not rendered.", labels,
                              registry=r)
        self.failed = Counter("farm_jobs_failed", "Jobs failed for good.", labels, registry=r)
        self.retried = Counter("farm_jobs_retried", "Attempts that failed, were lost or handed back, "
                                                    "and were queued again.", labels, registry=r)
        self.duration = Histogram("farm_job_duration_seconds",
                                  "Rendered jobs: seconds from dispatch to done.", labels,
                                  buckets=DURATION_BUCKETS, registry=r)
        self._media: dict[str, str] = {}  # run id -> media type
        self._started: dict[tuple[str | None, str | None], float] = {}  # (run, job) -> dispatch time

    def observe(self, event: Event) -> None:
        """Count one event (an observer of `farm.controller.events.EventBus`; its thread only)."""
        kind = event.type
        if kind == "run.submitted":
            if len(self._media) >= MAX_RUNS:
                self._media.pop(next(iter(self._media)))
            media = self._media[event.run or ""] = str(event.data.get("media_type", "unknown"))
            for metric in (self.done, self.reused, self.failed, self.retried, self.duration):
                metric.labels(media)  # a series from 0, so rate() sees the first jobs too
            return
        media = self._media.get(event.run or "", "unknown")
        job = (event.run, event.job)
        if kind == "job.started":
            if len(self._started) >= MAX_TRACKED:
                self._started.pop(next(iter(self._started)))
            self._started[job] = event.time
        elif kind == "job.done":
            self.done.labels(media).inc()
            started = self._started.pop(job, None)
            if event.data.get("reused"):
                self.reused.labels(media).inc()
            elif isinstance(event.data.get("duration_s"), int | float):
                self.duration.labels(media).observe(event.data["duration_s"])
            elif started is not None:
                self.duration.labels(media).observe(max(0.0, event.time - started))
        elif kind == "job.failed":
            self._started.pop(job, None)
            self.failed.labels(media).inc()
        elif kind == "job.retried":
            self._started.pop(job, None)
            self.retried.labels(media).inc()
        elif kind == "run.finished":
            for key in [k for k in self._started if k[0] == event.run]:
                del self._started[key]

    def observe_published(self, published: Published) -> None:
        """Count events published together (an `EventBus.observe(..., together=True)` observer; its
        thread only): a message's plain `job.started` or `job.done` group at once, as `observe` counts
        them one by one; anything else one by one."""
        kind, jobs, data = published.type, published.jobs, published.data
        if kind == "job.started" and len(jobs) > 1:  # (its data is not counted)
            started, run, at = self._started, published.run, published.time
            for job in jobs:
                if len(started) >= MAX_TRACKED:
                    started.pop(next(iter(started)))
                started[(run, job)] = at
        elif (kind == "job.done" and len(jobs) > 1 and published.field is None and not data.get("reused")
              and "duration_s" not in data):
            media, run, at = self._media.get(published.run or "", "unknown"), published.run, published.time
            self.done.labels(media).inc(len(jobs))
            duration, pop = self.duration.labels(media), self._started.pop
            for job in jobs:
                started = pop((run, job), None)
                if started is not None:
                    duration.observe(max(0.0, at - started))
        else:
            for event in published.events():
                self.observe(event)

    def collect_from(self, backend: Backend, files: Callable[[], Mapping[str, int]] | None = None) -> None:
        """Add the scrape-time gauges: the controller's status, and the file service's byte counters."""
        self.registry.register(_SnapshotCollector(backend, files))


class _SnapshotCollector:
    def __init__(self, backend: Backend, files: Callable[[], Mapping[str, int]] | None) -> None:
        self.backend = backend
        self.files = files

    def describe(self) -> list[Metric]:
        return []  # unchecked: nothing is asked of the controller at registration

    def collect(self) -> Iterator[Metric]:
        with self.backend.client() as client:
            status = client.status()
        agents = GaugeMetricFamily("farm_agents", "Connected agents by state.", labels=["state"])
        tally = Tally(agent_state(a) for a in status["agents"])
        for state in AGENT_STATES:
            agents.add_metric([state], tally[state])
        yield agents
        runs = GaugeMetricFamily("farm_runs", "Runs the controller remembers, by state.", labels=["state"])
        tally = Tally(p["state"] for p in status["projects"])
        for state in RUN_STATES:
            runs.add_metric([state], tally[state])
        yield runs
        queued = GaugeMetricFamily("farm_jobs_queued", "Jobs of active runs not yet running nor finished "
                                                       "(runs whose total is known).", labels=["media_type"])
        running = GaugeMetricFamily("farm_jobs_running", "Jobs leased to agents now.", labels=["media_type"])
        waiting: Tally[str] = Tally()
        leased: Tally[str] = Tally()
        for p in status["projects"]:
            if p["state"] not in ("running", "finalizing"):
                continue
            media = p["media_type"]
            leased_now = p.get("running") or 0
            leased[media] += leased_now
            total = p.get("total")  # None while a media type's split has not told yet
            waiting[media] += max(0, total - p["done"] - p["failed"] - leased_now) if total is not None else 0
        for media in sorted(set(waiting) | set(leased)):
            queued.add_metric([media], waiting[media])
            running.add_metric([media], leased[media])
        yield queued
        yield running
        if self.files is not None:
            counters = self.files()
            synced = CounterMetricFamily("farm_sync_bytes", "Bytes through the file service: in (uploaded "
                                                            "projects), out (assets and outputs served).",
                                         labels=["direction"])
            synced.add_metric(["in"], counters.get("bytes_in", 0))
            synced.add_metric(["out"], counters.get("bytes_out", 0))
            yield synced

