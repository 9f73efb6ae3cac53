"""Options several commands share: where the controller is and how to prove who we are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
import zmq

from farm.cli.security import client_security

ControllerUrl = Annotated[str, typer.Option(
    "--controller", "-c", envvar="FARM_CONTROLLER", help="The controller, e.g. tcp://host:5555.")]
ClientKey = Annotated[str, typer.Option("--key", help="Our key pair name, for a secured controller.")]
KeysDir = Annotated[Optional[Path], typer.Option(
    "--keys-dir", envvar="FARM_KEYS",
    help="CURVE keys folder (see `farm keys`; default ~/.config/farm/keys), used on loopback too.")]
ServerKey = Annotated[str, typer.Option(
    "--server-key", help="The controller's public key: a key, a file, or a name in the keys folder.")]
Insecure = Annotated[bool, typer.Option(
    "--insecure", help="No keys: no authentication or encryption (any local user can then connect).")]


def socket_setup_for(url: str, keys_dir: Path | None, key: str, server_key: str,
                     insecure: bool) -> Callable[[zmq.Socket], None] | None:
    """How to set up our sockets to `url`: CURVE with our keys, or nothing (ipc://, --insecure)."""
    security = client_security(url, keys_dir, key, server_key, insecure)
    return security.socket_setup if security else None
