"""`farm plugins`: what is installed."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from farm.cli.errors import reported
from farm.plugins import get_plugins


def plugins(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List plugins, their versions and the media types they provide.

    Exits 1 when a plugin failed to load or was refused (after listing everything, its error
    included); a media type unavailable on this machine is no failure."""
    with reported(as_json=as_json):
        loaded = get_plugins()
    rows = []
    for info in loaded.infos:
        media = [{"name": n, "description": loaded.media_types[n].description,
                  "unavailable": loaded.media_types[n].available()} for n in info.media_types]
        rows.append({"name": info.name, "version": info.version, "module": info.module, "dist": info.dist,
                     "media_types": media, "hooks": info.hooks, "error": info.error})
    failed = [row for row in rows if row["error"]]
    names = ", ".join(f"{row['name']} ({row['dist'] or row['module']})" for row in failed)
    if as_json:  # one object, as every --json; a failure's error and code beside the listing
        problem = {"error": f"not loaded: {names}", "state": "failed", "code": "error"} if failed else {}
        typer.echo(json.dumps({"plugins": rows, **problem}, indent=2))
    else:
        for row in rows:
            typer.echo(f"{row['name']} {row['version'] or ''} ({row['module']})".rstrip())
            if row["error"]:
                typer.echo(f"  failed to load: {row['error']}")
            for media in row["media_types"]:
                note = f"  [unavailable: {media['unavailable']}]" if media["unavailable"] else ""
                typer.echo(f"  {media['name']}: {media['description']}{note}")
        if failed:
            typer.echo(f"error: not loaded (see above): {names}", err=True)
    if failed:
        raise typer.Exit(1)
