"""`farm controller`: a long-running controller for many agents and projects."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from farm.cli.errors import reported
from farm.cli.invite import advertised_url, invite, openable_urls, remember_url
from farm.cli.options import Insecure, KeysDir, checked_bind
from farm.cli.security import controller_security, is_file_guarded, remember_controller
from farm.controller.server import Controller
from farm.discovery import Announcer
from farm.endpoints import files_bind
from farm.errors import FarmError
from farm.notify import BadWebhook, check_host, check_webhook
from farm.security import KeyStore, ServerSecurity, requires_security

if TYPE_CHECKING:
    from farm.http.server import HttpServer

log = logging.getLogger(__name__)


def default_state_dir() -> Path:
    """The controller's state folder without --state-dir: ``$XDG_DATA_HOME/farm``, else
    ``~/.local/share/farm``."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "farm"


def _checked(check: Callable[[str], str], values: list[str] | None) -> list[str]:
    try:
        return [check(value) for value in values or ()]
    except BadWebhook as exc:
        raise typer.BadParameter(str(exc)) from None


def _refuse_own_port(bind: str, files_port: int | None, host: str, port: int) -> None:
    """Refuse an --http port this controller listens on itself (its job port or its file service's,
    bound before the HTTP server): else "Address already in use", as if another program held it."""
    scheme, _, rest = bind.partition("://")
    if scheme != "tcp" or port == 0:
        return
    bind_host = rest.rpartition(":")[0].strip("[]")
    if not ({bind_host, host} & {"0.0.0.0", "::", "*"} or bind_host == host):
        return
    files = files_bind(bind, files_port).rpartition(":")[2]
    owned = {rest.rpartition(":")[2]: "job port (--bind)",
             files: "file service's port (the job port + 1, or --files-port)"}
    if str(port) in owned:
        raise typer.BadParameter(f"port {port} is this controller's own {owned[str(port)]}: choose another",
                                 param_hint="--http")


def controller(
    bind: Annotated[str, typer.Option(
        callback=checked_bind, help="Where agents and clients connect: tcp://HOST:PORT (PORT 0: a free one) "
                                    "or ipc://PATH.")] = "tcp://127.0.0.1:5555",
    state_dir: Annotated[Optional[Path], typer.Option(
        help="Where the controller keeps its state ($XDG_DATA_HOME/farm, else ~/.local/share/farm).",
        show_default=str(default_state_dir()))] = None,  # the folder it will use, as this user runs it
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 1.0,
    liveness: Annotated[int, typer.Option(help="Missed heartbeats before an agent is declared dead.")] = 5,
    keys_dir: KeysDir = None,
    key: Annotated[str, typer.Option("--key", help="This controller's key pair name.")] = "controller",
    insecure: Insecure = False,
    notify: Annotated[Optional[list[str]], typer.Option(
        "--notify", metavar="URL", callback=lambda urls: _checked(check_webhook, urls),
        help="POST a JSON summary here when any run ends (repeatable; see docs/notify.md).")] = None,
    notify_allow: Annotated[Optional[list[str]], typer.Option(
        "--notify-allow", metavar="HOST", callback=lambda hosts: _checked(check_host, hosts),
        help="Send projects' own webhooks (\\[notify] in farm.toml) to this host (repeatable; '*': any "
             "host).")] = None,
    http: Annotated[Optional[str], typer.Option(
        "--http", metavar="HOST:PORT",
        help="Serve the HTTP API and dashboard here, e.g. 127.0.0.1:8642. Every request needs a token: "
             "on loopback the dashboard's address with one is printed; tokens from `farm keys api-token "
             "new` work anywhere.")] = None,
    files_port: Annotated[Optional[int], typer.Option(
        "--files-port", min=1, max=65535,
        help="The file service's TCP port (default: the job port + 1; random if the job port is).")] = None,
    announce: Annotated[bool, typer.Option(
        help="Announce this controller on the local network (mDNS), when it listens beyond loopback "
             "with keys.")] = True,
    invite_node: Annotated[bool, typer.Option(
        "--invite", help="Print a join command with a new single-use token (valid 1 h); without it one is "
                         "printed only beyond loopback while no key is allowed yet.")] = False,
) -> None:
    """Run a controller until interrupted (Ctrl-C or SIGTERM).

    It uses CURVE keys unless --insecure: beyond loopback they must exist (`farm keys`); on
    loopback its key pair is made if missing, and local agents and clients of the same user
    find it in the keys folder. An ipc:// address is guarded by its folder's permissions.
    """
    announcer = None
    with reported():
        security = controller_security(bind, keys_dir, key, insecure)
        web = None
        if http is not None:
            from farm.http.server import HttpServer, parse_listen  # FastAPI loads only when asked for

            web = HttpServer(*parse_listen(http), keys_dir=keys_dir)
            _refuse_own_port(bind, files_port, web.host, web.port)
        ctl = Controller(bind, state_dir=state_dir or default_state_dir(), heartbeat=heartbeat,
                         liveness=liveness, security=security, notify=notify or (),
                         notify_allow=notify_allow or (), http=web, files_port=files_port)
        why = "stopped"  # what ended it, said last: a service log otherwise just ends

        def on_sigterm(*_: object) -> None:
            nonlocal why
            why = "stopped (SIGTERM)"
            ctl.stop()

        signal.signal(signal.SIGTERM, on_sigterm)
        try:
            ctl.start()
            assert ctl.url is not None
            if not is_file_guarded(ctl.url):
                remember_controller(KeyStore(keys_dir), ctl.url, security)  # same-user clients here find our key
            if security:
                typer.echo(f"controller public key {security.public_key} (keys in {security.store.root})",
                           err=True)
            typer.echo(f"controller listening on {ctl.url}", err=True)
            _say_openable(ctl.url, "nodes dial it as")
            # nodes elsewhere dial both ports; on loopback or ipc:// no firewall stands between
            beyond = requires_security(bind)
            typer.echo(f"file service on {ctl.assets.endpoint}"
                       + (" (a firewall must let both ports in)" if beyond else ""), err=True)
            if security:
                announcer = _welcome_nodes(ctl.url, security, ctl.assets.endpoint, announce, invite_node,
                                           beyond=beyond)
            if web is not None:
                _say_http(web)
            while ctl.wait(0.5):  # short waits, so Ctrl-C is noticed
                pass
            if ctl.crash is not None:
                raise FarmError(f"the controller stopped: {ctl.crash!r}")
        except KeyboardInterrupt:
            why = "stopped (Ctrl-C)"
        finally:
            if announcer is not None:
                announcer.close()
            ctl.stop()
            if security:
                security.stop()  # after the sockets it authenticates for
            if ctl.crash is None:
                typer.echo(f"controller {why}", err=True)


def _say_openable(url: str, how: str) -> None:
    """Beside an address on every interface (which no one can dial), the ones that can be."""
    names = openable_urls(url)
    if names:
        typer.echo(f"  (every interface) {how} {' or '.join(names[:4])}", err=True)


def _say_http(web: HttpServer) -> None:
    """Where the API is, and how to get in: on loopback, once, the dashboard's address with this run's
    session token (to the terminal only: it is a credential, and every local user can reach the port)."""
    typer.echo(f"HTTP API and dashboard on {web.url}", err=True)
    _say_openable(web.url, "open it as")
    if web.dashboard_url is not None:
        typer.echo(f"  dashboard (its address holds this run's token: keep it to yourself): "
                   f"{web.dashboard_url}", err=True)
        typer.echo("  scripts send 'Authorization: Bearer TOKEN' (lasting tokens: "
                   "`farm keys api-token new NAME`)", err=True)
    else:
        typer.echo("  a browser opens it once as URL?access_token=TOKEN (tokens: "
                   "`farm keys api-token new NAME`)", err=True)


def _welcome_nodes(url: str, security: ServerSecurity, files: str, announce: bool,
                   asked: bool, *, beyond: bool) -> Announcer | None:
    """Print a ready join command (a single-use token, valid an hour) when `asked`, or beyond loopback
    while no key is allowed yet, and announce us on the LAN. Unasked tokens at every start would pile
    up live credentials in the log; on loopback none is made unasked (this user's agents find the
    controller in the keys folder, and whoever reads the terminal or log must not join). `beyond`: the
    bind address reaches beyond loopback (`url`, the address bound, says 127.0.0.1 for 0.0.0.0:0)."""
    reachable = advertised_url(url)
    remember_url(security.store, reachable)
    if asked or (beyond and not security.store.allowed()):
        _, _, command = invite(security.store, security.keys.name, reachable, expires_s=3600, single_use=True)
        typer.echo(f"to add a render node, run there (single-use, valid 1 h; more: `farm keys invite`):\n"
                   f"  {command}", err=True)
    elif not beyond:
        typer.echo("to add a render node: this user's `farm agent` finds it by itself; for another user or "
                   "machine `farm keys invite` prints a join command (or start with --invite)", err=True)
    else:
        typer.echo("to add a render node: `farm keys invite` prints a join command (or start with --invite)",
                   err=True)
    if not announce or not requires_security(url):
        return None
    try:
        return Announcer(url, security.public_key, int(files.rsplit(":", 1)[1]))
    except (OSError, ValueError) as exc:  # no multicast here: nodes name the controller instead
        log.warning("cannot announce the controller on the local network: %s", exc)
        return None
