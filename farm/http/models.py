"""The shapes of the API's answers, for the OpenAPI document (and checked on the way out).

Each model names the fields a client may rely on; ``extra="allow"`` lets the controller's
newer fields through, so a field added to a snapshot reaches clients without a change here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Progress(_Open):
    jobs: dict[str, int | None] = Field(
        description="total (null until known), done, failed, reused, running, collating")
    units: dict[str, Any] | None = Field(description="Progress in the media's own units, where reported.")


class Project(_Open):
    """One run, as the controller sees it now."""

    id: str = Field(description="The run id, e.g. city-1a2b3c4d.")
    project: str = Field(description="The project's name.")
    media_type: str
    state: str = Field(description="running, finalizing, done, failed or cancelled")
    paused: bool
    priority: int
    total: int | None = Field(description="Jobs in all; null while the media type has not said.")
    done: int
    failed: int
    reused: int
    running: int
    collating: int = Field(0, description="Jobs rendered whose outputs are being collated (not yet done).")
    rate: float | None = Field(description="Jobs per second.")
    eta_s: float | None = Field(description="Seconds left at the current rate.")
    stalled: str | None = Field(description="Why nothing runs, when nothing does.")
    error: str | None
    code: str | None = Field(None, description="What stopped it, for scripts: controller_disk, or null.")
    progress: Progress


class Projects(BaseModel):
    projects: list[Project]


class Job(_Open):
    key: str
    state: str = Field(description="running, collating, queued, failed, done or reused")
    attempts: int | None  # None: a done job of a run from before a restart (the journal does not say)
    agent: str | None
    duration_s: float | None
    error: str | None


class ProjectDetail(Project):
    failures: list[Job] = Field(description="The first jobs that failed for good.")


class JobsPage(_Open):
    project: str
    total: int = Field(description="Jobs in this state (all states if none was asked for).")
    offset: int
    limit: int
    unlisted: int = Field(0, description="Jobs the media type has not split off yet.")
    ended: bool = Field(False, description="The run is over: its unlisted jobs never will be done.")
    jobs: list[Job]


class Attempt(_Open):
    attempt: int = Field(description="Counted from 1 over the job's life; the last 3 are kept.")
    agent: str | None
    state: str
    error: str | None
    duration_s: float | None
    log: str = Field(description="The tail of the attempt's log.")


class JobLog(_Open):
    project: str
    key: str
    attempts: list[Attempt]


class Agent(_Open):
    id: str
    host: str
    state: str = Field(description="active, draining, blocklisted or broken")
    slots: int
    capabilities: list[str]
    tags: list[str] = Field(description="Capabilities that are no media type nor renderer: its --tag values.")
    running: list[str] = Field(description="project/job keys it holds (a few of them).")
    jobs: int = Field(description="Jobs it holds.")
    load: float | None = Field(description="Jobs held per slot.")
    done: int = Field(description="Jobs it rendered, over the controller's life: across its reconnects "
                                  "and its node's restarts (the same --id).")
    failed: int = Field(description="Jobs that failed on it, counted as `done`.")
    last_heartbeat_s: float = Field(description="Seconds since it was last heard from.")


class Agents(BaseModel):
    agents: list[Agent]


class Error(BaseModel):
    """Every refusal: what was wrong, naming the field or the thing (docs/api-http.md, Errors)."""

    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": description} for status, description in (
        (400, "The controller refused a malformed request."),
        (401, "A token is required here, and none or a bad one was sent."),
        (404, "No such project, job or agent."),
        (409, "Not possible in the current state."),
        (503, "The controller did not answer in time."),
    )
}
