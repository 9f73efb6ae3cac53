"""A JOBS message's jobs sorted into those an agent queues and those it refuses, each with why.

The checks are `farm.agent.trust.job_refusal`'s and the agent's own (a project it was never
described, or refused); the common message (every key plain, no dependencies, timeouts in bounds,
every project described and not refused) is checked a field at a time over all its jobs
(`farm.keycheck.plain_jobs`), not job by job: this runs for every job an agent is sent.
"""

from __future__ import annotations

import itertools
import operator
from collections import deque
from collections.abc import Container, Mapping, Set

from farm.agent.trust import job_refusal
from farm.keycheck import plain_job, plain_jobs
from farm.protocol import JobSpec

NEVER_DESCRIBED = "controller sent a job for a project it never described"
_NUMS = {int, float}
_PROJECT = operator.attrgetter("project")


def screen(jobs: list[JobSpec], described: Container[str],
           refused: Mapping[str, str]) -> tuple[list[JobSpec], list[tuple[JobSpec, str]]]:
    """The jobs to queue, in order, and those refused with why (``described``: the projects this
    agent took in; ``refused``: project id -> why it will not work on it)."""
    if not jobs:
        return [], []
    _, keys, projects, _, deps, timeouts = zip(*jobs)
    runs = set(projects)
    if _NUMS.issuperset(map(type, timeouts)):  # each distinct one checked once (a bool, equal to 1, is not)
        timeouts = tuple(set(timeouts))
    if (plain_jobs(keys, deps, timeouts) and all(map(described.__contains__, runs))
            and runs.isdisjoint(refused)):
        return jobs, []
    taken, refusals = [], []
    for job in jobs:
        key, deps_, timeout = job.key, job.deps, job.timeout
        why = refused.get(job.project) or (None if plain_job(key, deps_, timeout)
                                           else job_refusal(key, deps_, timeout))
        if why is None and job.project not in described:
            why = NEVER_DESCRIBED
        if why is None:
            taken.append(job)
        else:
            refusals.append((job, why))
    return taken, refusals


def take_ready(queue: deque[JobSpec], ready: Set[str], count: int) -> list[JobSpec]:
    """Up to ``count`` jobs taken off ``queue`` whose project is in ``ready`` (its files are here), in
    order; the others keep their places."""
    batch = list(itertools.islice(queue, count))
    if ready.issuperset(map(_PROJECT, batch)):  # the common case: the first `count` may all go
        if len(batch) == len(queue):
            queue.clear()
        else:
            for _ in batch:
                queue.popleft()
        return batch
    batch, waiting = [], []
    while queue and len(batch) < count:
        job = queue.popleft()
        (batch if job.project in ready else waiting).append(job)
    queue.extendleft(reversed(waiting))
    return batch
