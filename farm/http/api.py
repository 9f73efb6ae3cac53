"""The ``/api/v1`` routes: projects, jobs, logs, agents and control actions.

Each route asks the controller through a `farm.client.Client` (`farm.http.backend`) and
returns JSON. Routes are plain functions: FastAPI runs them in its thread pool, so a
controller that is slow to answer holds one pool thread, never the server's event loop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from farm.errors import ControlError
from farm.http import models
from farm.http.backend import Backend, backend
from farm.plugins import get_plugins

router = APIRouter(prefix="/api/v1", responses=models.ERRORS)

Farm = Annotated[Backend, Depends(backend)]
# run ids and agent ids are farm names (farm.ids); the controller checks them again
ProjectId = Annotated[str, Path(description="A run id (`name-1a2b3c4d`), or a project name: its newest run.",
                                min_length=1, max_length=200)]
AgentId = Annotated[str, Path(description="An agent's id, as `GET /api/v1/agents` lists it.",
                              min_length=1, max_length=200)]
# the controller's JOB_STATES (farm.protocol), in its listing order
JobState = Literal["running", "collating", "queued", "failed", "done", "reused"]
PRIORITY_LIMIT = 1_000_000  # the controller's own bound on priorities
FAILURES_SHOWN = 20  # failed jobs a run's own page lists


class Priority(BaseModel):
    """``PATCH /api/v1/projects/{id}``'s body."""

    model_config = ConfigDict(extra="forbid")
    priority: StrictInt = Field(ge=-PRIORITY_LIMIT, le=PRIORITY_LIMIT, description="Higher runs first.")


class Retry(BaseModel):
    """``POST /api/v1/projects/{id}/retry``'s body: the jobs to run again (all failed ones if absent)."""

    model_config = ConfigDict(extra="forbid")
    keys: list[Annotated[str, Field(min_length=1, max_length=1024)]] | None = Field(
        default=None, max_length=10_000,
        description="Job keys that failed for good; absent or null: all of them.")


class Empty(BaseModel):
    """A control action's body: ``{}`` (nothing to say, but it must be JSON)."""

    model_config = ConfigDict(extra="forbid")


# -- projects --------------------------------------------------------------------------


@router.get("/projects", response_model=models.Projects,
            summary="Every run the controller remembers, newest last")
def list_projects(farm: Farm) -> dict[str, Any]:
    """``{"projects": [snapshot, ...]}``; each snapshot as in `GET /api/v1/projects/{id}`."""
    with farm.client() as client:
        return {"projects": [_project_view(p) for p in client.status()["projects"]]}


@router.get("/projects/{project}", response_model=models.ProjectDetail,
            summary="One run: state, progress, rate, ETA, failures, priority")
def get_project(project: ProjectId, farm: Farm) -> dict[str, Any]:
    """The run's snapshot: ``id``, ``project`` (name), ``media_type``, ``state``, ``paused``,
    ``priority``, ``total``, ``done``, ``failed``, ``reused``, ``running``, ``collating``, ``rate`` (jobs/s),
    ``eta_s``, ``stalled`` (why nothing runs), ``error``, ``progress``: ``{"jobs": {...},
    "units": ...}`` (the media's own units where the controller reports them), and ``failures``:
    the first `FAILURES_SHOWN` jobs that failed for good (all of them: ``/jobs?state=failed``)."""
    with farm.client() as client:
        snapshot = client.project(project)
        failures = client.jobs(snapshot["id"], state="failed", limit=FAILURES_SHOWN)["jobs"] \
            if snapshot.get("failed") else []
        return {**_project_view(snapshot), "failures": failures}


@router.get("/projects/{project}/jobs", response_model=models.JobsPage, summary="A page of a run's jobs")
def list_jobs(
    project: ProjectId, farm: Farm,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """``{"total", "offset", "limit", "unlisted", "jobs": [job, ...]}``; each job:
    ``{"key", "state", "attempts", "agent", "duration_s", "error"}``."""
    with farm.client() as client:
        return client.jobs(project, state=state, offset=offset, limit=limit)


@router.get("/projects/{project}/jobs/{key:path}/log", response_model=models.JobLog,
            summary="One job's attempts and their log tails")
def job_log(project: ProjectId, key: Annotated[str, Path(min_length=1, max_length=1024)],
            farm: Farm) -> dict[str, Any]:
    """``{"project", "key", "attempts": [{"attempt", "agent", "state", "error", "duration_s", "log"}]}``."""
    with farm.client() as client:
        return client.job_log(project, key)


# -- control ---------------------------------------------------------------------------


@router.post("/projects/{project}/pause", summary="Lease no more of the run's jobs; agents finish theirs")
def pause(project: ProjectId, farm: Farm, _body: Empty | None = None) -> dict[str, Any]:
    with farm.client() as client:
        return client.pause(project)


@router.post("/projects/{project}/resume", summary="Lease a paused run's jobs again")
def resume(project: ProjectId, farm: Farm, _body: Empty | None = None) -> dict[str, Any]:
    with farm.client() as client:
        return client.resume(project)


@router.post("/projects/{project}/cancel", summary="Stop a run for good; returns its summary")
def cancel(project: ProjectId, farm: Farm, _body: Empty | None = None) -> dict[str, Any]:
    with farm.client() as client:
        snapshot = client.project(project)  # not_found (404) before anything happens
        if snapshot["state"] not in ("running", "finalizing"):
            raise ControlError(f"project {snapshot['id']} is already {snapshot['state']}", "conflict")
        return client.cancel(snapshot["id"]).to_json() | {"id": snapshot["id"]}


@router.post("/projects/{project}/retry", summary="Run failed jobs again: all of them, or the keys given")
def retry(project: ProjectId, farm: Farm, body: Retry | None = None) -> dict[str, Any]:
    with farm.client() as client:
        return client.retry(project, keys=body.keys if body is not None else None)


@router.patch("/projects/{project}", summary="Change a run's priority")
def set_priority(project: ProjectId, body: Priority, farm: Farm) -> dict[str, Any]:
    with farm.client() as client:
        return client.set_priority(project, body.priority)


# -- agents ----------------------------------------------------------------------------


@router.get("/agents", response_model=models.Agents, summary="Connected agents and what they run")
def list_agents(farm: Farm) -> dict[str, Any]:
    """``{"agents": [{"id", "host", "state", "slots", "capabilities", "tags", "running", "jobs",
    "load", "last_heartbeat_s", ...}]}``: ``state`` is active, draining, blocklisted (by some
    run) or broken; ``running`` the jobs it holds; ``load`` jobs held per slot."""
    with farm.client() as client:
        return {"agents": [agent_view(a) for a in client.status()["agents"]]}


@router.post("/agents/{agent}/drain", summary="Give an agent no new jobs; it finishes what it holds")
def drain(agent: AgentId, farm: Farm, _body: Empty | None = None) -> dict[str, Any]:
    with farm.client() as client:
        return client.drain(agent)


@router.post("/agents/{agent}/undrain", summary="Give a drained agent jobs again")
def undrain(agent: AgentId, farm: Farm, _body: Empty | None = None) -> dict[str, Any]:
    with farm.client() as client:
        return client.undrain(agent)


# -- views -----------------------------------------------------------------------------


def _project_view(snap: dict[str, Any]) -> dict[str, Any]:
    """A run's snapshot with ``paused`` and a ``progress`` block (jobs, and media units if known);
    its ``stalled`` is the controller's (``"paused"`` while paused, `Scheduler.describe`)."""
    jobs = {name: snap.get(name) for name in ("total", "done", "failed", "reused", "running", "collating")}
    paused = bool(snap.get("paused")) and snap.get("state") in ("running", "finalizing")
    view = {**snap, "paused": paused, "progress": {"jobs": jobs, "units": snap.get("units")}}
    if isinstance(snap.get("first_dispatch_s"), (int, float)):
        view["first_dispatch_s"] = max(0.0, snap["first_dispatch_s"])
    return view


def agent_state(agent: dict[str, Any]) -> str:
    """active, draining, blocklisted (in a running run) or broken: the controller's word for it."""
    return agent.get("state") or ("broken" if agent.get("broken") else "active")


def agent_view(agent: dict[str, Any]) -> dict[str, Any]:
    """An agent of the status snapshot with ``state``, ``tags`` (its capabilities that are no media type
    this controller knows nor a renderer one needs: the user's ``--tag``s), ``running`` (project/job
    keys it holds) and ``load`` (jobs held per slot)."""
    media_types = get_plugins().media_types
    known = set(media_types).union(*(m.requirements for m in media_types.values()))
    caps = list(agent.get("capabilities") or [])
    slots = agent.get("slots") or 0
    return {**agent, "state": agent_state(agent),
            "tags": [c for c in caps if c not in known],
            "running": agent.get("current") or [],
            "load": round((agent.get("jobs") or 0) / slots, 3) if slots else None}
