"""`farm pause|resume|retry|priority|drain|undrain|logs`: steer a running controller, read job logs.

Thin: each command is one `farm.client.Client` call. With ``--json`` standard output gets
exactly one JSON object, the reply or the error (``{"error", "state", "code"}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer

from farm.cli.errors import reported
from farm.cli.options import ClientKey, ControllerUrl, Insecure, KeysDir, ServerKey
from farm.cli.status import connect
from farm.client import Client
from farm.words import counted

Project = Annotated[str, typer.Argument(
    help="The project's run id (see farm status) or name (its newest run).")]
Agent = Annotated[str, typer.Argument(help="The agent's id (see farm status).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _call(controller: str | None, as_json: bool, secure: tuple[Any, ...], ask: Callable[[Client], dict[str, Any]],
          text: Callable[[dict[str, Any]], str]) -> None:
    with reported(as_json=as_json), connect(controller, *secure) as client:
        reply = ask(client)
    typer.echo(json.dumps(reply) if as_json else text(reply))


def pause(project: Project, controller: ControllerUrl = None, as_json: AsJson = False,
          keys_dir: KeysDir = None, key: ClientKey = "client", server_key: ServerKey = "controller",
          insecure: Insecure = False) -> None:
    """Pause a run: agents finish the jobs they hold, and none of its jobs are handed out until resumed."""
    _call(controller, as_json, (keys_dir, key, server_key, insecure), lambda c: c.pause(project),
          lambda r: f"{r['project']}: paused ({counted(r['running'], 'job')} still finishing)")


def resume(project: Project, controller: ControllerUrl = None, as_json: AsJson = False,
           keys_dir: KeysDir = None, key: ClientKey = "client", server_key: ServerKey = "controller",
           insecure: Insecure = False) -> None:
    """Resume a paused run."""
    _call(controller, as_json, (keys_dir, key, server_key, insecure), lambda c: c.resume(project),
          lambda r: f"{r['project']}: resumed")


def retry(project: Project,
          keys: Annotated[list[str] | None, typer.Argument(
              help="Job keys to retry (default: every failed job).")] = None,
          controller: ControllerUrl = None, as_json: AsJson = False,
          keys_dir: KeysDir = None, key: ClientKey = "client", server_key: ServerKey = "controller",
          insecure: Insecure = False) -> None:
    """Run jobs that failed for good again, each with fresh attempts; a failed run runs again."""
    _call(controller, as_json, (keys_dir, key, server_key, insecure),
          lambda c: c.retry(project, keys or None),
          lambda r: f"{r['project']}: retrying {counted(len(r['retried']), 'job')}"
                    + (f": {', '.join(r['retried'][:20])}" if r["retried"] else "")
                    + (" ..." if len(r["retried"]) > 20 else ""))


def priority(project: Project,
             value: Annotated[int, typer.Argument(help="The new priority (higher runs first).",
                                                  min=-1_000_000, max=1_000_000)],
             controller: ControllerUrl = None, as_json: AsJson = False,
             keys_dir: KeysDir = None, key: ClientKey = "client", server_key: ServerKey = "controller",
             insecure: Insecure = False) -> None:
    """Change a running project's priority; dispatch reorders at once."""
    _call(controller, as_json, (keys_dir, key, server_key, insecure),
          lambda c: c.set_priority(project, value),
          lambda r: f"{r['project']}: priority {r['previous']} -> {r['priority']}")


def drain(agent: Agent, controller: ControllerUrl = None, as_json: AsJson = False,
          keys_dir: KeysDir = None, key: ClientKey = "client", server_key: ServerKey = "controller",
          insecure: Insecure = False) -> None:
    """Drain an agent: it finishes the jobs it holds and gets no new ones (kept across restarts)."""
    _call(controller, as_json, (keys_dir, key, server_key, insecure), lambda c: c.drain(agent),
          lambda r: f"agent {r['agent']}: draining ({counted(r['holding'], 'job')} still finishing)")


def undrain(agent: Agent, controller: ControllerUrl = None, as_json: AsJson = False,
            keys_dir: KeysDir = None, key: ClientKey = "client", server_key: ServerKey = "controller",
            insecure: Insecure = False) -> None:
    """Give a drained agent jobs again."""
    _call(controller, as_json, (keys_dir, key, server_key, insecure), lambda c: c.undrain(agent),
          lambda r: f"agent {r['agent']}: {r['state']}")


def logs(project: Project, job: Annotated[str, typer.Argument(help="The job's key.")],
         controller: ControllerUrl = None, as_json: AsJson = False,
         keys_dir: KeysDir = None, key: ClientKey = "client", server_key: ServerKey = "controller",
         insecure: Insecure = False) -> None:
    """Show a job's recent attempts: agent, outcome, error, duration and log tail."""
    _call(controller, as_json, (keys_dir, key, server_key, insecure),
          lambda c: c.job_log(project, job), log_text)


def log_text(reply: dict[str, Any]) -> str:
    kept = reply["attempts"]
    made = max((a["attempt"] for a in kept), default=0)  # numbered in all; the oldest are not kept
    of = f"{len(kept)} of {counted(made, 'attempt')}" if made > len(kept) else counted(len(kept), "attempt")
    lines = [f"{reply['project']} {reply['key']}: {of} kept"]
    for a in reply["attempts"]:
        took = f" in {a['duration_s']:.2f}s" if a.get("duration_s") is not None else ""
        lines.append(f"-- attempt {a['attempt']} on {a['agent'] or '?'}: {a['state']}{took}"
                     + (f": {a['error']}" if a.get("error") else ""))
        if a.get("log"):
            lines.append(a["log"].rstrip("\n"))
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    for command in (pause, resume, retry, drain, undrain, logs):
        app.command(command.__name__)(command)
    # `farm priority RUN -5`: a negative number is the value, not an option
    app.command("priority", context_settings={"ignore_unknown_options": True})(priority)
