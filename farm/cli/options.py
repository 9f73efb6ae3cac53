"""Options several commands share: where the controller is and how to prove who we are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
import zmq

from farm.security import client_security_for

ControllerUrl = Annotated[str, typer.Option(
    "--controller", "-c", envvar="FARM_CONTROLLER", help="The controller, e.g. tcp://host:5555.")]
ClientKey = Annotated[str, typer.Option("--key", help="Our key pair name, for a secured controller.")]
KeysDir = Annotated[Optional[Path], typer.Option(
    "--keys-dir", envvar="FARM_KEYS", help="CURVE keys folder (see `farm keys`); needed beyond loopback.")]
ServerKey = Annotated[str, typer.Option(
    "--server-key", help="The controller's public key: a key, a file, or a name in the keys folder.")]
Insecure = Annotated[bool, typer.Option(
    "--insecure", help="No authentication or encryption, even beyond loopback.")]


def socket_setup_for(url: str, keys_dir: Path | None, key: str, server_key: str,
                     insecure: bool) -> Callable[[zmq.Socket], None] | None:
    """How to set up our sockets to `url`: CURVE with our keys, or nothing on loopback / --insecure."""
    security = client_security_for(url, keys_dir, name=key, server_key=server_key, insecure=insecure)
    return security.socket_setup if security else None
