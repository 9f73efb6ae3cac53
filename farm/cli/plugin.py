"""`farm plugin new NAME`: start a media-type plugin from the template shipped in farm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from farm.cli.errors import reported
from farm.scaffold import BadName, new_plugin

app = typer.Typer(help="Write plugins.", no_args_is_help=True)


@app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="The media type's name, e.g. thumbnails.")],
    folder: Annotated[Path, typer.Option("--dir", help="Where to create farm-NAME/.")] = Path("."),
) -> None:
    """Write a plugin package farm-NAME: entry point, media type, sample project, tests.

    NAME is a lower-case letter, then letters, digits or _ (at most 40); it may not be an installed
    media type's, nor may farm_NAME or farm-NAME be installed (installed, the package would clash
    with it). Another NAME is a usage error (exit 2); a folder farm-NAME that exists, exit 1."""
    with reported():
        try:
            target = new_plugin(name, folder)
        except BadName as exc:
            raise typer.BadParameter(str(exc), param_hint="NAME") from None
    typer.echo(f"wrote {target}\nnext: pip install -e {target} && cd {target} && python -m pytest")
