"""`farm status` and `farm cancel`: look at and steer a running controller."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from farm.cli.errors import reported
from farm.cli.invite import WILDCARDS
from farm.cli.options import ClientKey, ControllerUrl, Insecure, KeysDir, ServerKey, controller_for
from farm.cli.progress import format_count, format_duration, format_rate, summary_text
from farm.client import RECONNECT_S, Client, DiskFull, DownloadLost, RunLost
from farm.errors import ConnectionLost, FarmError
from farm.handshake import NOTHING_LISTENS_AFTER_S
from farm.security import DEFAULT_SERVER_NAME
from farm.words import capabilities_shown

R = TypeVar("R")


def connect(controller: str | None, keys_dir: Path | None, key: str, server_key: str, insecure: bool) -> Client:
    url, setup, _ = controller_for(controller, None, keys_dir, key, server_key, insecure, role="client")
    return Client(url, socket_setup=setup, unreachable_after=NOTHING_LISTENS_AFTER_S)  # a person waits


def status(
    controller: ControllerUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    keys_dir: KeysDir = None,
    key: ClientKey = "client",
    server_key: ServerKey = "controller",
    insecure: Insecure = False,
) -> None:
    """Show the controller's agents and projects."""
    with reported(as_json=as_json), connect(controller, keys_dir, key, server_key, insecure) as client:
        report = client.status()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(status_text(report, client.url))


def controller_line(bound: str, dialled: str | None) -> str:
    """The controller's address a user can dial: one bound to every interface (``tcp://0.0.0.0:5555``)
    is shown as the address this client dialled, with the bound one after it."""
    host = bound.partition("://")[2].rpartition(":")[0]
    if dialled and dialled != bound and host in (*WILDCARDS, ""):
        return f"controller {dialled} (listening on {bound})"
    return f"controller {bound}"


def _key_shown(key: str | None) -> str:
    """The key an agent proved, by its name in the controller's allowed/ folder; the controller's own
    (an agent on its machine, reading its keys folder) said so, not read as the controller itself."""
    if not key:
        return ""
    if key == DEFAULT_SERVER_NAME:
        return "  key: the controller's own (an agent on its machine)"
    return f"  key {key}"


def status_text(report: dict[str, Any], dialled: str | None = None) -> str:
    """`farm status`'s text for a controller's status report; `dialled`: the URL this client used."""
    refused = report.get("refused") or []
    strangers = set(report.get("refused_keys") or ()) - {r["public_key"] for r in refused}
    counted = f"{len(report['agents'])} connected, {len(refused) + len(strangers)} refused" if refused or strangers \
        else str(len(report["agents"]))  # REFUSED rows below are not connected agents
    lines = [controller_line(report["controller"], dialled), f"agents ({counted}):"]
    for a in report["agents"]:
        state = "broken" if a.get("broken") else a.get("state") or "active"  # every agent says its state
        lines.append(f"  {a['id']:<24} {a['host']:<16} {state:<11} {a['jobs']:>3}/{a['slots']} busy"
                     f"  done {a['done']:<6}"
                     f" failed {a['failed']:<4} heartbeat {a['last_heartbeat_s']:.1f}s ago"
                     f"  {capabilities_shown(a['capabilities'])}"
                     + _key_shown(a.get("key")))
        if a.get("broken"):
            lines.append(f"    broken, takes no jobs: {a['broken']}")
        elif a.get("state") in ("draining", "blocklisted"):
            lines.append(f"    {a['state']}" + (": takes no new jobs" if a["state"] == "draining" else " in a run"))
        for media_type, why in (a.get("skew") or {}).items():
            lines.append(f"    takes no {media_type} jobs: {why}")
        if a.get("current"):
            lines.append(f"    running: {', '.join(a['current'])}")
    for r in report.get("refused") or ():  # cut off for their key: not rendering any more
        lines.append(f"  {r['id']:<24} {r['host']:<16} REFUSED: {r['reason']} ({r['seconds_ago']:.0f}s ago)")
    cut_off = {r["public_key"] for r in report.get("refused") or ()}
    revoked = report.get("revoked_keys") or {}  # (from a controller before it: none named)
    for key in report.get("refused_keys") or ():  # never got past the handshake (an agent's, or a client's)
        if key not in cut_off:
            why = f"key {revoked[key]} was revoked ({key})" if key in revoked else f"key {key} is not allowed"
            lines.append(f"  {'?':<24} {'?':<16} REFUSED at the handshake: {why}")
    lines.append(f"projects ({len(report['projects'])}):")
    for p in report["projects"]:
        total = format_count(p["total"])  # "?" while unknown
        if p.get("total_estimated"):  # adaptive chunks: it follows the sizes chosen until the split is over
            total = f"~{total}"
        state = "paused" if p.get("paused") and p["state"] == "running" else p["state"]
        line = (f"  {p['id']:<28} {p['media_type']:<10} {state:<10} {format_count(p['done'])}/{total} done"
                f"  {format_count(p['failed'])} failed  {format_count(p['running'])} running")
        if p.get("collating"):  # rendered, outputs being written: neither running nor done
            line += f"  {format_count(p['collating'])} collating"
        units = p.get("units") or {}
        pace = p  # rate and ETA in jobs, unless the media counts its own units (a steady total)
        if units.get("name", "jobs") != "jobs":  # the media's own count: tiles, frames, seconds
            line += f"  {units['name']} {format_count(units['done'])}/{format_count(units['total'])}"
            pace = units
        if pace.get("rate"):
            line += f"  {format_rate(pace['rate'])} {units.get('name') or 'jobs'}/s"
        if pace.get("eta_s") is not None:
            line += f"  ETA {format_duration(pace['eta_s'])}"
        lines.append(line)
        if p.get("stalled") and state != "paused":  # paused: its state says so already
            lines.append(f"    waiting: {p['stalled']}")
        for why in p.get("skipped") or ():
            lines.append(f"    not on: {why}")
        if p.get("error"):
            lines.append(f"    error: {p['error']}")
    return "\n".join(lines)


def cancel(
    project: Annotated[str, typer.Argument(help="The project's id (see farm status) or name.")],
    controller: ControllerUrl = None,
    keys_dir: KeysDir = None,
    key: ClientKey = "client",
    server_key: ServerKey = "controller",
    insecure: Insecure = False,
    download: Annotated[Optional[Path], typer.Option(
        "--download", help="Download the outputs collated so far into this folder.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object: the summary (with id, already, download_command: how to "
        "fetch outputs the controller keeps), or the error.")] = False,
) -> None:
    """Cancel a project, running or still uploading: its jobs are withdrawn from agents; outputs collated
    so far stay (a remote submitter's `farm submit` downloads them; `farm download RUN DIR` fetches
    them). A run that is finalizing (its jobs done, its final outputs being written) cannot be
    cancelled: refused, exit 1 (--json: code finalizing).
    With --download, a controller restart is waited out as `farm download` does."""
    from farm.cli.submit import download_command, say_waiting

    with reported(as_json=as_json), connect(controller, keys_dir, key, server_key, insecure) as client:
        if download is None:
            summary = client.cancel(project)
        else:  # a fetch: it rides out a controller restart, as `farm download`'s
            summary = _lasting(client, project, lambda: client.cancel(project))
        if summary.already and not as_json:
            typer.echo(f"project {summary.id} had finished already ({summary.state}): nothing to cancel",
                       err=True)
        kept_there = bool(summary.download) and download is None
        if download is not None:
            if not summary.download:
                where = f": they are in {summary.output_dir} on its disk" if summary.output_dir else ""
                where += f" ({summary.download_error})" if summary.download_error else ""
                raise FarmError(f"the controller offers no outputs of {summary.id or project} "
                                f"for download{where}")
            summary = _lasting(client, summary.id, lambda: client.download(
                summary, download, reconnect_s=RECONNECT_S, on_wait=say_waiting))
    # outputs kept by the controller: their paths there mean nothing here, so how to fetch them instead
    command = download_command(summary.id, client.url) if kept_there else None
    if as_json:
        typer.echo(json.dumps({"id": summary.id, **summary.to_json(), "already": summary.already,
                               "downloaded_to": str(download) if download is not None else None,
                               "downloaded_files": _count(summary.downloaded),
                               "download_command": command.strip("`") if command else None}))
        return
    fetch = (f"{command} fetches them (the `farm submit` that sent the project downloads them too)"
             if command else "")
    typer.echo(summary_text(summary, here=download is not None, fetch=fetch))


def download(
    project: Annotated[str, typer.Argument(
        help="The project's run id (see farm status) or name (its newest run).")],
    folder: Annotated[Path, typer.Argument(help="Where the outputs go (made if missing).")],
    controller: ControllerUrl = None,
    keys_dir: KeysDir = None,
    key: ClientKey = "client",
    server_key: ServerKey = "controller",
    insecure: Insecure = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object: the summary (with id, downloaded_to), or the error.")] = False,
) -> None:
    """Fetch a remote run's outputs into FOLDER: a finished run's at once, a running one's when it
    ends (its progress shown meanwhile; a controller restart is waited out). Nothing is cancelled.
    Exits as `farm submit` would for the run: 0 only if every job succeeded; 1 for a failed or
    cancelled run (its outputs collated so far are fetched all the same)."""
    from farm.cli.progress import ProgressBar
    from farm.cli.submit import say_waiting, waiting_shown

    with reported(as_json=as_json), connect(controller, keys_dir, key, server_key, insecure) as client:
        run_id = _lasting(client, project, lambda: client.project(project)["id"])  # it may not be up yet
        bar = ProgressBar(enabled=False if as_json else None)
        try:
            summary = _lasting(client, run_id, lambda: client.attach(
                run_id, bar.update, reconnect_s=RECONNECT_S, on_wait=waiting_shown(bar)))
        finally:
            bar.close()
        if not summary.download:
            where = summary.download_error or (
                f"the controller read the project in place: they are in {summary.output_dir} on its disk"
                if summary.output_dir and summary.outputs else "it collated none")
            raise FarmError(f"the controller offers no outputs of {run_id} for download: {where}"
                            + ("" if summary.ok else f" (the run {summary.state})"))
        summary = _lasting(client, run_id, lambda: client.download(summary, folder, reconnect_s=RECONNECT_S,
                                                                   on_wait=say_waiting))
    if as_json:
        report = {"id": summary.id or run_id, **summary.to_json(), "downloaded_to": str(folder.resolve()),
                  "downloaded_files": _count(summary.downloaded)}
        typer.echo(json.dumps(report))
    else:
        typer.echo(summary_text(summary))
    if not summary.ok:  # as `farm submit`: `farm download RUN DIR && publish` publishes only a whole run
        raise typer.Exit(1)


def _count(downloaded: list[str] | None) -> int | None:
    """How many files a download brought (a cancelled run's `outputs` are empty: no finalize ran)."""
    return None if downloaded is None else len(downloaded)


def _lasting(client: Client, run: str, call: Callable[[], R]) -> R:
    """`call()`, a request of a command that fetches a run's outputs: a controller not there (yet), or
    restarting, is waited for (`$FARM_CLIENT_RECONNECT`) and said so; giving up says how to fetch later."""
    from farm.cli.submit import fetch_later, make_room, say_waiting

    try:
        return client.patiently(call, run, reconnect_s=RECONNECT_S, on_wait=say_waiting)
    except DiskFull as exc:
        raise make_room(exc, client.url) from None
    except RunLost as exc:
        ended = isinstance(exc, DownloadLost)
        raise ConnectionLost(f"{exc}; {fetch_later(exc.run_id, client.url, ended=ended)}") from None
