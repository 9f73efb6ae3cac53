"""`farm keys`: CURVE key pairs and the list of keys a controller accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from farm.cli.errors import reported
from farm.security import KeyStore

app = typer.Typer(
    name="keys",
    help="CURVE key pairs for controllers and nodes, and the keys a controller allows.",
    no_args_is_help=True,
)

KeysDir = Annotated[Path | None, typer.Option(
    "--keys-dir", envvar="FARM_KEYS", help="The keys folder (default: ~/.config/farm/keys).")]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing key of that name.")]


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="The identity's name, e.g. controller or node.")],
    keys_dir: KeysDir = None,
    force: Force = False,
) -> None:
    """Make a key pair: NAME.key (public) and NAME.key_secret (mode 0600)."""
    with reported():
        store = KeyStore(keys_dir)
        pair = store.create(name, force=force)
        typer.echo(f"created {store.public_path(name)} and {store.secret_path(name)}", err=True)
        typer.echo(pair.public.decode())


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="An identity or allowed key.")],
    keys_dir: KeysDir = None,
) -> None:
    """Print a public key, to copy to the other side."""
    with reported():
        typer.echo(KeyStore(keys_dir).public_key(name).decode())


@app.command("import")
def import_key(
    name: Annotated[str, typer.Argument(help="The name to store it under, e.g. controller.")],
    key: Annotated[str, typer.Argument(help="A public key (40 characters) or a .key file.")],
    keys_dir: KeysDir = None,
    force: Force = False,
) -> None:
    """Store a peer's public key as NAME.key (on a node: the controller's key)."""
    with reported():
        store = KeyStore(keys_dir)
        store.add_public(name, key, force=force)
        typer.echo(f"stored {store.public_path(name)}", err=True)


@app.command()
def allow(
    key: Annotated[str, typer.Argument(help="A .key file, a key name here, or a 40-character key.")],
    name: Annotated[str | None, typer.Option(help="Name to allow it as (default: the file's).")] = None,
    keys_dir: KeysDir = None,
    force: Force = False,
) -> None:
    """Let a public key connect to this controller (copies it into allowed/)."""
    with reported():
        store = KeyStore(keys_dir)
        allowed_name, _ = store.allow(key, name=name, force=force)
        typer.echo(f"allowed {allowed_name}: {store.allowed_path(allowed_name)}", err=True)


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="An allowed key's name.")],
    keys_dir: KeysDir = None,
) -> None:
    """Stop allowing a key; a running controller refuses its new connections."""
    with reported():
        store = KeyStore(keys_dir)
        store.revoke(name)
        typer.echo(f"revoked {name}", err=True)


@app.command("list")
def list_keys(
    keys_dir: KeysDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List identities and allowed keys: name, public key, secret held here, allowed."""
    with reported():
        store = KeyStore(keys_dir)
        rows = store.listing()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            typer.echo(f"no keys in {store.root}", err=True)
            return
        width = max(len(str(r["name"])) for r in rows)
        for r in rows:
            allowed = "allowed" if r["allowed"] else "-"
            secret = "secret" if r["secret"] else "-"
            typer.echo(f"{str(r['name']).ljust(width)}  {allowed:<7} {secret:<6} {r['public_key']}")


from farm.cli import tokens  # noqa: E402 (`farm keys token ...`, defined in its own module)

app.add_typer(tokens.app, name="token")
