"""`farm keys`: CURVE key pairs and the list of keys a controller accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from farm.cli.errors import reported
from farm.cli.invite import invite as invite_token
from farm.cli.invite import known_url, recorded_warning
from farm.cli.options import checked_address
from farm.cli.security import joined_keys, move_joined_key
from farm.keys import SecurityError
from farm.security import KeyStore, allowed_roles
from farm.tokens import TokenStore, format_expiry, parse_duration

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
        move_joined_key(store, name)  # a joined controller's key, kept under this name by joins of old
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
    role: Annotated[str | None, typer.Option(
        help="What the key may do: agent (serve jobs), client (submit, steer, look) or both. "
             "Default: both for a new key; a key allowed already keeps its role.")] = None,
) -> None:
    """Let a public key connect to this controller (copies it into allowed/), or change its --role."""
    with reported():
        store = KeyStore(keys_dir)
        allowed_name, key_bytes = store.allow(key, name=name, force=force, role=role)
        typer.echo(f"allowed {allowed_name} as {allowed_roles(store)[key_bytes]}: "
                   f"{store.allowed_path(allowed_name)}", err=True)


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
    """List identities, allowed keys and the controllers joined (by address): name, allowed (and as what:
    agent, client, both) or joined, secret held here, public key."""
    with reported(as_json=as_json):
        store = KeyStore(keys_dir)
        rows = [{**row, "joined": False} for row in store.listing(allowed_roles(store))]
        joined = sorted(joined_keys(store).items(), key=lambda item: item[1])  # by address
        rows += [{"name": url, "public_key": key.decode(), "secret": False, "allowed": False, "role": None,
                  "joined": True} for key, url in joined]
        if as_json:
            typer.echo(json.dumps({"keys": rows}, indent=2))
            return
        if not rows:
            typer.echo(f"no keys in {store.root}", err=True)
            return
        width = max(len(str(r["name"])) for r in rows)
        for r in rows:
            allowed = f"allowed as {r['role']}" if r["allowed"] else "joined" if r["joined"] else "-"
            secret = "secret" if r["secret"] else "-"
            typer.echo(f"{str(r['name']).ljust(width)}  {allowed:<17} {secret:<6} {r['public_key']}")


def _checked_duration(value: str) -> str:
    """A bad --expires is a usage error (exit 2, code ``usage``), as any bad value is."""
    try:
        parse_duration(value)
    except SecurityError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@app.command()
def invite(
    keys_dir: KeysDir = None,
    url: Annotated[str | None, typer.Option(
        callback=checked_address,
        help="Where nodes reach the controller (default: what `farm controller` last recorded).")] = None,
    expires: Annotated[str, typer.Option(callback=_checked_duration,
                                         help="How long the token lasts: 30m, 1h, 7d, never.")] = "24h",
    single_use: Annotated[bool, typer.Option(
        "--single-use/--reusable", help="One node, or a fleet (revoke it when the fleet is in).")] = True,
    client: Annotated[bool, typer.Option("--client", help="A command for a submitting client, not a node.")] = False,
    server: Annotated[str, typer.Option("--key", help="The controller's key pair name.")] = "controller",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: token id, join argument, command.")] = False,
) -> None:
    """Make a join token and print the one command a new node runs (farm agent --join ...)."""
    with reported(as_json=as_json):
        store = KeyStore(keys_dir)
        warning = None if url else recorded_warning(url := known_url(store))
        token_id, argument, command = invite_token(
            store, server, url, expires_s=parse_duration(expires), single_use=single_use,
            role="client" if client else "agent")
        if as_json:  # the same fields and forms as `farm keys invites --json`
            token = TokenStore(store).load(token_id)
            typer.echo(json.dumps({"id": token_id, "join": argument, "command": command, "kind": token.kind,
                                   "single_use": single_use, "expires": token.expires,
                                   "expires_at": format_expiry(token.expires),
                                   **({"warning": warning} if warning else {})}))
            return
        if warning:
            typer.echo(f"warning: {warning}", err=True)
        typer.echo(f"token {token_id} ({'single-use' if single_use else 'reusable'}, expires in {expires}); run:",
                   err=True)
        typer.echo(command)


@app.command("invites")
def invites(
    keys_dir: KeysDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List join tokens (`farm keys invite`): id, state (live, used, expired, revoked), use, expiry, who joined with each."""
    with reported(as_json=as_json):
        rows = [t.row() for t in TokenStore(KeyStore(keys_dir)).all()]
        if as_json:
            typer.echo(json.dumps({"invites": rows}, indent=2))
            return
        for r in rows:
            joined = ", ".join(map(str, r["uses"])) or "-"
            use = "single-use" if r["single_use"] else "reusable"
            typer.echo(f"{r['id']}  {r['state']:<8} {r['kind']:<6} {use:<10} "
                       f"expires {r['expires_at']}  joined: {joined}")


@app.command("revoke-invite")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="A token's id (see farm keys invites).")],
    keys_dir: KeysDir = None,
) -> None:
    """Stop a join token from letting anyone else in (keys that joined with it stay allowed)."""
    with reported():
        TokenStore(KeyStore(keys_dir)).revoke(token_id)
        typer.echo(f"revoked join token {token_id}", err=True)


from farm.cli import apitokens  # noqa: E402 (`farm keys api-token ...`, defined in its own module)

app.add_typer(apitokens.app, name="api-token")
