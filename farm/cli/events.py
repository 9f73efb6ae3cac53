"""`farm events`: print a controller's event stream as it happens."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from farm.cli.errors import reported
from farm.cli.options import ClientKey, ControllerUrl, Insecure, KeysDir, ServerKey, controller_for
from farm.client import Client
from farm.words import counted

COMMON = ("seq", "time", "type", "run", "job", "agent")


def events(
    controller: ControllerUrl = None,
    since: Annotated[int | None, typer.Option("--since", min=0, help=(
        "Start after this sequence number (0: everything the controller still holds); "
        "default: from now on."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Exit after this many events.")] = None,
    keys_dir: KeysDir = None,
    key: ClientKey = "client",
    server_key: ServerKey = "controller",
    insecure: Insecure = False,
) -> None:
    """Print what happens on the controller: runs, jobs, agents, progress (Ctrl-C ends it)."""
    def missed(count: int) -> None:
        typer.echo(f"warning: {counted(count, 'event')} older than the controller keeps {'is' if count == 1 else 'are'} not shown", err=True)

    printed = 0
    with reported(as_json=as_json):  # no --controller: this user's own, as `farm status` finds it
        url, setup, _ = controller_for(controller, None, keys_dir, key, server_key, insecure, role="client")
    with reported(as_json=as_json), Client(url, socket_setup=setup) as client:
        try:
            for event in client.events(since, on_missed=missed):
                typer.echo(json.dumps(event, default=str) if as_json else event_text(event))
                printed += 1
                if limit is not None and printed >= limit:
                    return
        except KeyboardInterrupt:
            return


def event_text(event: dict[str, Any]) -> str:
    """One line for people: seq, local time, type, what it concerns, then its own fields."""
    when = time.strftime("%H:%M:%S", time.localtime(event["time"])) if isinstance(event.get("time"), float) else "?"
    where = " ".join(f"{k}={event[k]}" for k in ("run", "job", "agent") if event.get(k))
    if event.get("type") == "progress":
        extra = f"{event.get('done')}/{event.get('total') or '?'} done, {event.get('failed')} failed, " \
                f"{event.get('running')} running"
    else:
        extra = " ".join(f"{k}={v}" for k, v in event.items() if k not in COMMON and v not in (None, "", [], {}))
    return f"{event.get('seq'):>8} {when} {event.get('type'):<17} {where} {extra}".rstrip()
