"""`farm status` and `farm cancel`: look at and steer a running controller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from farm.cli.errors import reported
from farm.cli.options import ClientKey, ControllerUrl, Insecure, KeysDir, ServerKey, controller_for
from farm.cli.progress import format_duration, summary_text
from farm.client import Client
from farm.handshake import NOTHING_LISTENS_AFTER_S


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
    with reported(), connect(controller, keys_dir, key, server_key, insecure) as client:
        report = client.status()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(status_text(report))


def status_text(report: dict[str, Any]) -> str:
    lines = [f"controller {report['controller']}", f"agents ({len(report['agents'])}):"]
    for a in report["agents"]:
        lines.append(f"  {a['id']:<24} {a['host']:<16} {a['jobs']:>3}/{a['slots']} busy  done {a['done']:<6}"
                     f" failed {a['failed']:<4} heartbeat {a['last_heartbeat_s']:.1f}s ago"
                     f"  [{', '.join(a['capabilities'])}]" + (f"  key {a['key']}" if a.get("key") else ""))
        if a.get("broken"):
            lines.append(f"    broken, takes no jobs: {a['broken']}")
        if a.get("current"):
            lines.append(f"    running: {', '.join(a['current'])}")
    lines.append(f"projects ({len(report['projects'])}):")
    for p in report["projects"]:
        total = p["total"] if p["total"] is not None else "?"
        line = (f"  {p['id']:<28} {p['media_type']:<10} {p['state']:<10} {p['done']}/{total} done"
                f"  {p['failed']} failed  {p['running']} running")
        if p.get("rate"):
            line += f"  {p['rate']:.1f} jobs/s"
        if p.get("eta_s") is not None:
            line += f"  ETA {format_duration(p['eta_s'])}"
        lines.append(line)
        if p.get("stalled"):
            lines.append(f"    waiting: {p['stalled']}")
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
) -> None:
    """Cancel a project: its jobs are withdrawn from agents; outputs collated so far stay."""
    with reported(), connect(controller, keys_dir, key, server_key, insecure) as client:
        summary = client.cancel(project)
    typer.echo(summary_text(summary))
