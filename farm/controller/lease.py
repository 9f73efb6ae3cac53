"""A lease (one job handed to one agent, until its result or its deadline) and a job's failure for good."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from farm.controller.run import ProjectRun
    from farm.mediatype import Job


@dataclass(slots=True)
class Lease:
    id: str
    run: ProjectRun
    job: Job
    agent: bytes
    agent_id: str
    started: float
    deadline: float
    result: Any = None  # the JobResult its agent sent, once one came (its log and duration)


@dataclass
class Failure:
    key: str
    error: str
    log: str
    attempts: int  # in all, as the job's log numbers them (`_fail_for_good`)
    job: Job | None = None  # to run it again (a manual retry)
    agent: str | None = None  # where its last attempt ran
