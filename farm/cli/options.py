"""Options several commands share: where the controller is and how to prove who we are."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
import zmq

from farm.cli.security import client_security, joined_keys, local_controller, remember_joined
from farm.discovery import DISCOVER_S, discover
from farm.endpoints import endpoint_problem
from farm.errors import ConnectionLost, FarmError
from farm.join import join
from farm.security import ClientSecurity, KeyStore

log = logging.getLogger(__name__)

AUTO = "auto"  # --controller auto: find one on the local network
LOCAL_DEFAULT = "tcp://127.0.0.1:5555"  # `farm controller`'s default address
#: how a client joins a controller: only `farm submit` takes --join; later commands find it by its key
JOIN_ONE = ("join one once with `farm submit --join URL#KEY.TOKEN` (`farm keys invite --client` on the "
            "controller prints it)")
NAME_ONE = ("name one with --controller tcp://HOST:5555 (or set FARM_CONTROLLER), " + JOIN_ONE
            + ", or pass --controller auto to find one announcing itself on the local network")


def checked_address(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """A typer callback: `value` (a controller's address, or 'auto') unchanged, or a usage error
    (exit 2, code ``usage``) naming the option, or its environment variable when the value came
    from there, and what is expected (`farm.endpoints.endpoint_problem`).

    Every --controller (and `farm keys invite --url`) passes here, so a bad address is never a
    ZeroMQ traceback.
    """
    return _checked(ctx, param, value, bind=False)


def checked_bind(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """`checked_address` for a listening address (--bind): HOST may be ``*``, PORT 0 or ``*``."""
    return _checked(ctx, param, value, bind=True)


def _checked(ctx: typer.Context, param: typer.CallbackParam, value: str | None, *, bind: bool) -> str | None:
    problem = None if value is None or (value == AUTO and not bind) else endpoint_problem(value, bind=bind)
    if problem is None:
        return value
    from_env = getattr(ctx.get_parameter_source(param.name or ""), "name", "") == "ENVIRONMENT"
    named = f"${param.envvar}" if from_env and isinstance(param.envvar, str) else param.opts[0]
    raise typer.BadParameter(problem, param_hint=f"{named} {value!r}")


ControllerUrl = Annotated[Optional[str], typer.Option(
    "--controller", "-c", envvar="FARM_CONTROLLER", callback=checked_address,
    help="The controller, e.g. tcp://host:5555; 'auto' finds one on the local network.")]
Join = Annotated[Optional[str], typer.Option(
    "--join", envvar="FARM_JOIN", show_envvar=True,
    help="Join a controller with a token: 'URL#KEY.TOKEN' as `farm keys invite` prints it (makes our key "
         "pair; the token is spent once). On a shared machine prefer $FARM_JOIN or --join-file: "
         "a command line is visible to every user (`ps`).")]
JoinFile = Annotated[Optional[Path], typer.Option(
    "--join-file", envvar="FARM_JOIN_FILE", dir_okay=False,
    help="Read the join argument (URL#KEY.TOKEN) from this file (keep it mode 0600).")]
ClientKey = Annotated[str, typer.Option("--key", help="Our key pair name, for a secured controller.")]
KeysDir = Annotated[Optional[Path], typer.Option(
    "--keys-dir", envvar="FARM_KEYS",
    help="CURVE keys folder (see `farm keys`; default ~/.config/farm/keys), used on loopback too.")]
ServerKey = Annotated[str, typer.Option(
    "--server-key", help="The controller's public key: a key, a file, or a name in the keys folder.")]
Insecure = Annotated[bool, typer.Option(
    "--insecure", help="No keys: no authentication or encryption (any local user can then connect).")]

Setup = Callable[[zmq.Socket], None] | None


def socket_setup_for(url: str, keys_dir: Path | None, key: str, server_key: str, insecure: bool) -> Setup:
    """How to set up our sockets to `url`: CURVE with our keys, or nothing (ipc://, --insecure)."""
    if insecure:
        log.warning("talking to %s WITHOUT keys (--insecure): no encryption, and we cannot tell the "
                    "controller from an impostor", url)
    security = client_security(url, keys_dir, key, server_key, insecure)
    return security.socket_setup if security else None


def join_argument(join_arg: str | None, join_file: Path | None) -> str | None:
    """The join argument from --join / $FARM_JOIN or --join-file / $FARM_JOIN_FILE (one of them).

    Taken out of the environment once read, so the processes we start do not inherit the secret.
    """
    os.environ.pop("FARM_JOIN", None)
    os.environ.pop("FARM_JOIN_FILE", None)
    if join_file is None:
        return join_arg or None
    if join_arg:
        raise FarmError("give the join argument once: --join (or $FARM_JOIN) or --join-file, not both")
    try:
        text = join_file.read_text().strip()
    except OSError as exc:
        raise FarmError(f"--join-file {join_file}: cannot read it ({exc.strerror or exc})") from None
    if not text:
        raise FarmError(f"--join-file {join_file}: the file is empty; put the URL#KEY.TOKEN that "
                        "`farm keys invite` prints in it")
    return text


def controller_for(controller: str | None, join_arg: str | None, keys_dir: Path | None, key: str,
                   server_key: str, insecure: bool, *, role: str, name: str | None = None,
                   discover_by_default: bool = False) -> tuple[str, Setup, str | None]:
    """(url, socket set-up, the name a join gave us) of the controller to talk to, from --join,
    --controller (or 'auto'), or none.

    No controller named: this user's loopback controller if one recorded itself, else (for
    agents, `discover_by_default`) the local network, else a `ConnectionLost` (code ``unreachable``)
    that says how to name one.
    """
    if join_arg:
        if insecure:
            raise FarmError("--join proves a token over CURVE keys; it cannot go with --insecure")
        joined = join(join_arg, keys_dir, key, name=name, role=role)
        remember_joined(KeyStore(keys_dir), joined.url, joined.server_key)
        if not joined.again:
            typer.echo(f"joined the controller at {joined.url} as {joined.name}; from now on "
                       f"`--controller {joined.url}` is enough (the token is no longer needed)", err=True)
        security = ClientSecurity(keys_dir, joined.keys.name, joined.server_key)
        return joined.url, security.socket_setup, joined.name
    if controller is None and not discover_by_default:
        local = local_controller(KeyStore(keys_dir), LOCAL_DEFAULT)
        if insecure or local is not None:
            controller = local or LOCAL_DEFAULT  # this user's controller on this machine
        else:
            raise ConnectionLost(f"no controller named, and none of ours listens on this machine: "
                                 f"{_name_joined(keys_dir) or NAME_ONE}")
    if controller is None or controller == AUTO:
        if insecure:
            raise FarmError("finding a controller on the network needs keys to check it by; "
                            f"it cannot go with --insecure: {NAME_ONE}")
        found = _discovered(keys_dir, key)
        if found is not None:
            return (*found, None)
        local = local_controller(KeyStore(keys_dir), LOCAL_DEFAULT)
        if local is not None:  # `auto` as the agent's default: on the network, else our own
            typer.echo(f"none on the local network; using this user's controller on {local}", err=True)
            controller = local
        else:
            raise ConnectionLost("found no controller with a key we know on the local network (none "
                                 "announced itself, or none whose key is in our keys folder): name one with "
                                 f"--controller tcp://HOST:5555 (or set FARM_CONTROLLER), or {JOIN_ONE}")
    return controller, socket_setup_for(controller, keys_dir, key, server_key, insecure), None


def _name_joined(keys_dir: Path | None) -> str | None:
    """How to name the controllers we joined (`--join` remembers them, by address), if any: "join one"
    would send a user who did to ask for a token they do not need."""
    joined = sorted(set(joined_keys(KeyStore(keys_dir)).values()))
    if not joined:
        return None
    urls = " or ".join(f"--controller {url}" for url in joined[:5]) + (" or ..." if len(joined) > 5 else "")
    return f"name the one you joined: {urls} (or set FARM_CONTROLLER)"


def _discovered(keys_dir: Path | None, key: str) -> tuple[str, Setup] | None:
    store = KeyStore(keys_dir)
    trusted = {public: name for name, (public, _) in store.identities().items()}
    for public, where in joined_keys(store).items():  # a controller we joined, by the address we joined
        trusted.setdefault(public, f"the controller joined at {where}")
    typer.echo(f"looking for a controller on the local network (mDNS, up to {DISCOVER_S:.0f}s)...", err=True)
    found, strangers = discover(trusted)
    for other in strangers:
        typer.echo(f"warning: ignoring the controller announced at {other.url}: its key {other.key.decode()} is "
                   f"not one we know (known: {', '.join(sorted(set(trusted.values()))) or 'none'}); an impostor, "
                   "or one we have not joined", err=True)
    if found is None:
        return None
    typer.echo(f"found controller {found.url} on the local network (key {found.key.decode()}, "
               f"known here as {trusted[found.key]!r})", err=True)
    return found.url, ClientSecurity(keys_dir, key, found.key).socket_setup
