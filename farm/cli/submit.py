"""`farm submit DIR`: render a project, on an embedded farm or a running controller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from farm.cli.errors import reported
from farm.cli.options import Insecure, KeysDir, ServerKey, client_security
from farm.client import submit as submit_remote
from farm.embedded import submit_embedded
from farm.progress import ProgressBar, summary_text
from farm.project import load_project


def submit(
    project_dir: Annotated[Path, typer.Argument(help="The project folder (with a farm.toml).")],
    controller: Annotated[Optional[str], typer.Option(
        "--controller", "-c", envvar="FARM_CONTROLLER",
        help="A running controller, e.g. tcp://host:5555. Without it, an embedded farm renders locally.")] = None,
    agents: Annotated[Optional[int], typer.Option(
        "--agents", "-n", min=1, help="Local agents for an embedded run (default: the number of cores).")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Output folder, relative to the project (default: [output] directory).")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first on a shared controller.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary object at the end.")] = False,
    keys_dir: KeysDir = None,
    key: Annotated[str, typer.Option("--key", help="Our key pair name, for a secured controller.")] = "client",
    server_key: ServerKey = "controller",
    insecure: Insecure = False,
    shared: Annotated[bool, typer.Option(
        "--shared-fs", help="The controller reads the project from this same path: skip the upload.")] = False,
) -> None:
    """Render a project and wait for it to finish; exit 0 only if every job succeeded."""
    bar = ProgressBar(enabled=None if not as_json else False)
    with reported():
        try:
            if controller:
                security = client_security(controller, keys_dir, key, server_key, insecure)
                summary = submit_remote(controller, load_project(project_dir, output=output),
                                        priority=priority, on_update=bar.update,
                                        socket_setup=security.socket_setup if security else None,
                                        upload=not shared)
            else:
                summary = submit_embedded(project_dir, agents=agents, output=output,
                                          on_update=bar.update, priority=priority)
        finally:
            bar.close()
    if as_json:
        typer.echo(json.dumps(summary.to_json()))
    else:
        typer.echo(summary_text(summary))
    if not summary.ok:
        raise typer.Exit(1)


