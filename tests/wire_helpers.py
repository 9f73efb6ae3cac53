"""Test peers' view of the wire's arrays: a job's array (`farm.protocol.JOB_ROW`) as a map by field
name, a result written as a map by field name as its array (`farm.protocol.RESULT_ROW`), and back."""

from __future__ import annotations

from typing import Any

from farm.protocol import JobResult, JobSpec


def job_map(row: list[Any]) -> dict[str, Any]:
    """A JOBS message's job by field name (lease, key, project, params, deps, timeout)."""
    return dict(zip(JobSpec._fields, row, strict=True))


def result_row(fields: dict[str, Any]) -> list[Any]:
    """A result given by field name (lease, ok, result, files, error, log, duration, requeue, retry;
    those left out take `JobResult`'s defaults) as the array a RESULTS message carries."""
    return JobResult(**fields).to_wire()


def result_map(row: list[Any]) -> dict[str, Any]:
    """A RESULTS message's result by field name, as protocol 1's map had it: error and log only if
    given, requeue only if True, retry only if False."""
    result = JobResult.from_wire(row)
    found = {"lease": result.lease, "ok": result.ok, "result": result.result, "files": result.files,
             "duration": result.duration}
    if result.error is not None:
        found["error"] = result.error
    if result.log is not None:
        found["log"] = result.log
    if result.requeue:
        found["requeue"] = True
    if not result.retry:
        found["retry"] = False
    return found
