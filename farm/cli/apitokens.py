"""`farm keys api-token`: bearer tokens for the HTTP API (`farm controller --http`), beside the keys."""

from __future__ import annotations

import datetime
import json
from typing import Annotated

import typer

from farm.cli.errors import reported
from farm.cli.options import KeysDir
from farm.http.tokens import TokenStore

app = typer.Typer(name="token", help="Bearer tokens for the HTTP API (required beyond loopback).",
                  no_args_is_help=True)


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. grafana or alice.")],
    keys_dir: KeysDir = None,
) -> None:
    """Make a token and print it (once: only its hash is kept). Send it as 'Authorization: Bearer TOKEN'."""
    with reported():
        store = TokenStore(keys_dir)
        token = store.new(name)
        typer.echo(f"made API token {name!r} in {store.path}; it is shown only now", err=True)
        typer.echo(token)


@app.command("list")
def list_tokens(
    keys_dir: KeysDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the tokens' names and when they were made (never the tokens)."""
    with reported(as_json=as_json):
        store = TokenStore(keys_dir)
        rows = store.listing()
        if as_json:
            typer.echo(json.dumps({"tokens": rows}, indent=2))
            return
        if not rows:
            typer.echo(f"no API tokens in {store.path}", err=True)
            return
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            made = (datetime.datetime.fromtimestamp(r["created"], datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
                    if isinstance(r["created"], int | float) else "-")
            typer.echo(f"{r['name'].ljust(width)}  {made}")


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    keys_dir: KeysDir = None,
) -> None:
    """Delete a token; a running server refuses it within a second."""
    with reported():
        TokenStore(keys_dir).revoke(name)
        typer.echo(f"revoked API token {name!r}", err=True)
