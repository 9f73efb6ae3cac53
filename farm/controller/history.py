"""Runs that finished before this controller started: read-only views from the journal.

A restarted controller resumes only unfinished runs; the finished ones stay in the journal
with their summaries. `History` lets `farm status`, `farm cancel NAME --download`, and the
HTTP API's ``GET /api/v1/projects[/{id}[/jobs]]`` still answer for them: their snapshot is
rebuilt from the summary (state, counts, units, error), their jobs page from the journal's
done and failed jobs, a job's log from the job-log store (`farm.controller.joblogs`), their
preview's facts from the project they ran (`facts`). Nothing about them can be steered (they
are not in ``runs``).
"""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any

from farm.controller.joblogs import finished_attempts
from farm.controller.joblogstore import JobLogStore
from farm.errors import FarmError
from farm.journal import Journal, ProjectRecord
from farm.plugins import get_media_type
from farm.preview import RunFacts
from farm.project import Project

KEEP_FINISHED_RUNS = 50  # finished runs a controller lists (farm.controller.clients prunes to as many)


class History:
    """The journal's finished runs from before this start (read once, at first use)."""

    def __init__(self, journal: Journal, keep: int) -> None:
        self.journal = journal
        self.keep = keep
        self._records: list[ProjectRecord] | None = None

    def records(self) -> list[ProjectRecord]:
        """Up to `keep` runs that had finished before this start, oldest first (with a summary)."""
        if self._records is None:
            records = self.journal.finished_projects(self.keep)
            self._records = [r for r in records if isinstance(r.summary, dict)]
        return self._records

    def find(self, ref: str) -> ProjectRecord | None:
        """A finished run by id, or by project name (its newest one)."""
        records = self.records()
        return (next((r for r in records if r.project_id == ref), None)
                or next((r for r in reversed(records) if r.summary.get("project") == ref), None))

    def loaded(self, ref: str) -> ProjectRecord | None:
        """`find` among the records read already (safe from any thread: it reads no journal);
        None before the loop's first read (a query for the run makes it)."""
        return self.find(ref) if self._records is not None else None


def facts(record: ProjectRecord) -> RunFacts | None:
    """A finished run's immutable facts (for its preview) from the project it ran; None if that
    cannot be read back, its media type is not installed, or its output folder is gone."""
    try:
        project = Project.from_wire(record.wire)
        media = get_media_type(project.media_type)
    except (FarmError, KeyError, TypeError, ValueError):
        return None
    if not project.output_dir.is_dir():
        return None
    settings = MappingProxyType(copy.deepcopy(dict(project.settings)))
    return RunFacts(record.project_id, project.name, media, settings, project.output_dir, record.submitted_at)


def snapshot(record: ProjectRecord) -> dict[str, Any]:
    """A run's snapshot (the shape of `ProjectRun.snapshot`) from its journaled summary."""
    summary = record.summary or {}
    jobs = summary.get("jobs") or {}
    return {
        "id": record.project_id,
        "project": summary.get("project"),
        "media_type": summary.get("media_type"),
        "state": record.status,
        "paused": False,
        "priority": record.priority,
        "total": jobs.get("total"),
        "done": jobs.get("done", 0),
        "failed": jobs.get("failed", 0),
        "reused": jobs.get("reused", 0),
        "resumed": 0,
        "running": 0,
        "collating": 0,
        "partial": 0,
        "retrying": 0,
        "elapsed_s": summary.get("elapsed_s"),
        "first_dispatch_s": None,
        "rate": None,
        "eta_s": None,
        "stalled": None,
        "error": summary.get("error"),
        "code": summary.get("code"),
        "units": summary.get("units"),
        "skipped": [],
        "journaled": True,
    }


def jobs_page(journal: Journal, record: ProjectRecord, state: str | None, offset: int,
              limit: int) -> dict[str, Any]:
    """A page of a journaled run's jobs: failed ones first, then done ones, by key (as for live runs)."""
    listed: list[dict[str, Any]] = []
    if state in (None, "failed"):
        listed = [{"key": f.key, "state": "failed", "attempts": f.attempts, "agent": f.agent,
                   "duration_s": None if f.duration is None else round(f.duration, 3), "error": f.error}
                  for f in journal.failed_jobs(record.project_id)]
    page = listed[offset:offset + limit]
    done_total = 0
    if state in (None, "done", "reused"):
        only_reused = {"done": False, "reused": True}.get(state)
        done_total, rows = journal.done_page(record.project_id, only_reused, max(0, offset - len(listed)),
                                             limit - len(page))
        page += [{"key": key, "state": "reused" if agent is None else "done",
                  "attempts": 0 if agent is None else None, "agent": agent, "duration_s": None, "error": None}
                 for key, agent in rows]
    return {"project": record.project_id, "total": len(listed) + done_total, "offset": offset, "limit": limit,
            "unlisted": 0, "ended": True, "jobs": page}


def job_log(journal: Journal, logs: JobLogStore | None, record: ProjectRecord, key: str) -> dict[str, Any] | None:
    """A journaled run's job log (the shape of a live run's): its kept attempts in ``logs`` (the
    controller's job-log store), oldest first; None if the run never had the job."""
    attempts = finished_attempts(logs, record.project_id, key)
    if not attempts and not journal.is_done(record.project_id, key) and key not in journal.keys(
            record.project_id, "failed"):
        return None
    return {"project": record.project_id, "key": key, "attempts": attempts, "evicted": 0}
