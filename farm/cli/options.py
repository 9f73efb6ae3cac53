"""Options several commands share: where the controller is and how to prove who we are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from farm.security import ClientSecurity, client_security_for

Controller = Annotated[str, typer.Option(
    "--controller", "-c", envvar="FARM_CONTROLLER", help="The controller, e.g. tcp://host:5555.")]
KeysDir = Annotated[Optional[Path], typer.Option(
    "--keys-dir", envvar="FARM_KEYS", help="CURVE keys folder (see `farm keys`); needed beyond loopback.")]
ServerKey = Annotated[str, typer.Option(
    "--server-key", help="The controller's public key: a key, a file, or a name in the keys folder.")]
Insecure = Annotated[bool, typer.Option(
    "--insecure", help="No authentication or encryption, even beyond loopback.")]


def client_security(url: str, keys_dir: Path | None, key: str, server_key: str,
                    insecure: bool) -> ClientSecurity | None:
    return client_security_for(url, keys_dir, name=key, server_key=server_key, insecure=insecure)
