"""`farm jobs PROJECT`: list a run's jobs (their keys, for `farm logs` and `farm retry`).

Thin: one `farm.client.Client.jobs` call, the listing the HTTP API serves
(``GET /api/v1/projects/{id}/jobs``), with its filter and paging. With ``--json`` standard
output gets exactly one JSON object: the page (``total`` the listed jobs, ``unlisted`` those not
split off yet, which the text's header adds to its count), or the error (``{"error", "state", "code"}``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from farm.cli.control import AsJson, Project
from farm.cli.errors import reported
from farm.cli.options import ClientKey, ControllerUrl, Insecure, KeysDir, ServerKey
from farm.cli.progress import format_duration
from farm.cli.status import connect
from farm.protocol import JOB_STATES
from farm.words import counted

ERROR_WIDTH = 100  # characters of a failed job's error shown in the table (the first line only)
DEFAULT_LIMIT = 100  # jobs a page lists unless asked (the API's default too)
COLUMNS = ("KEY", "STATE", "ATTEMPTS", "AGENT", "TIME", "ERROR")


def checked_state(value: str | None) -> str | None:
    """A typer callback: `value` (a job state to filter by) unchanged, or a usage error (exit 2,
    code ``usage``) naming the states there are, as any bad option value (the controller refuses
    one too, ``bad_request``, to a client that did not check)."""
    if value is not None and value not in JOB_STATES:
        raise typer.BadParameter(f"{value!r} is not a job state (one of {', '.join(JOB_STATES)})")
    return value


def jobs(
    project: Project,
    state: Annotated[Optional[str], typer.Option(
        "--state", callback=checked_state,
        help="Only jobs in this state: running, collating (rendered, outputs being written), "
             "queued, failed (for good), done or reused.")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", min=1, max=1000, help="List at most this many jobs.")] = DEFAULT_LIMIT,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many jobs first (paging).")] = 0,
    controller: ControllerUrl = None,
    as_json: AsJson = False,
    keys_dir: KeysDir = None,
    key: ClientKey = "client",
    server_key: ServerKey = "controller",
    insecure: Insecure = False,
) -> None:
    """List a run's jobs: key, state, attempts, agent, time, and a failed job's error. Running jobs
    come first, then collating, queued, failed, and done or reused ones by key."""
    with reported(as_json=as_json), connect(controller, keys_dir, key, server_key, insecure) as client:
        page = client.jobs(project, state=state, offset=offset, limit=limit)
    typer.echo(json.dumps(page) if as_json else jobs_text(page, state))


def jobs_text(page: dict[str, Any], state: str | None = None) -> str:
    """A page of `Client.jobs` as a table, with a line saying which jobs it shows and what is left."""
    rows = [_row(job) for job in page["jobs"]]
    which = f"{state} jobs" if state else "jobs"
    first = page["offset"] + 1
    last = page["offset"] + len(rows)
    # jobs not split off yet (or never to be: the run ended) are no rows, but part of the run's count
    unlisted = page.get("unlisted", 0) if state in (None, "queued") else 0
    why = "not done: the run ended" if page.get("ended") else "not split off yet"
    aside = f" ({unlisted:,} {why})" if unlisted else ""
    if rows:
        header = f"{which} {first}-{last} of {page['total'] + unlisted:,}{aside}"
    else:
        header = f"no {which}" + (" listed" if unlisted else "") \
            + (f" past {page['offset']:,}" if page["offset"] else "") + aside
    lines = [f"{page['project']}: {header}"]
    if rows:
        widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS) - 1)]
        for r in [COLUMNS, *rows]:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[-1])
        lines = [line.rstrip() for line in lines]
    if last < page["total"] and rows:
        more = (f" --state {state}" if state else "") \
            + (f" --limit {page['limit']}" if page["limit"] != DEFAULT_LIMIT else "")
        lines.append(f"{page['total'] - last:,} more: farm jobs {page['project']}{more} --offset {last}")
    if unlisted:  # they wait to be queued: in no other state
        lines.append(f"{counted(unlisted, 'job')} {why} (not listed)")
    return "\n".join(lines)


def _row(job: dict[str, Any]) -> tuple[str, ...]:
    took = job.get("duration_s")
    error = (job.get("error") or "").strip().splitlines()
    shown = error[0] if error else ""
    if len(shown) > ERROR_WIDTH or len(error) > 1:
        shown = shown[:ERROR_WIDTH].rstrip() + " ..."
    return (job["key"], job["state"], "-" if job.get("attempts") is None else str(job["attempts"]),
            job.get("agent") or "-", "-" if took is None else _took(took), shown)


def _took(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)
