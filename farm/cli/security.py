"""The commands' security defaults: keys even on loopback, because loopback is shared.

Any local user can connect to ``tcp://127.0.0.1:PORT``, and can listen there while our
controller is down. So a standalone ``farm controller`` on a loopback TCP address uses CURVE
keys unless ``--insecure``: it loads its key pair from the keys folder, creating it there
(0600 in a 0700 folder) if it is missing, and records the address it listens on with its
public key (``local/ADDRESS.key`` in the keys folder). The clients on the same machine
(``farm agent``, ``farm submit --controller``, ``farm status``, ``farm cancel``) look their
loopback address up there: if a controller of this user listened there, they require that
controller's key, and prove themselves with their own identity (``node``, ``client``) if it is
there, else with the controller's own key pair, which a controller always admits (whoever
can read that secret is the controller's user). Another local user has neither, cannot write
the record, and is refused during the handshake; a port squatter cannot pose as the
controller. An address with no record is dialled in plain text unless a keys folder is given
and holds the controller's key, as before (a controller started with ``--insecure``, or a
library `Controller` in a test, removes or never writes a record).

``ipc://`` addresses are guarded by the file system instead (the socket's folder mode), and
addresses beyond loopback keep the rule of `farm.security`: keys are required.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from farm.security import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    ClientSecurity,
    KeyStore,
    SecurityError,
    ServerSecurity,
    client_security_for,
    read_certificate,
    requires_security,
    server_security_for,
)

log = logging.getLogger(__name__)

LOCAL = "local"  # the keys folder's record of loopback addresses our controllers listen on
_RECORD = """#   ZeroMQ CURVE Public Certificate, written by `farm controller`
#   The controller of this user that listens on {url} proves it holds this key.

metadata
    name = "{name}"
curve
    public-key = "{key}"
"""


def record_path(store: KeyStore, url: str) -> Path:
    """Where the record for a loopback address lives: ``local/tcp-127.0.0.1-5555.key``.

    ``localhost`` is recorded as 127.0.0.1, so a client may name the controller either way.
    """
    url = url.lower().replace("://localhost:", "://127.0.0.1:")
    return store.root / LOCAL / (re.sub(r"[^a-z0-9.]+", "-", url).strip("-") + PUBLIC_SUFFIX)


def remember_controller(store: KeyStore, url: str, security: ServerSecurity | None) -> None:
    """Record that our controller listens on `url` with this key (None: in plain text, so forget it)."""
    path = record_path(store, url)
    if security is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".new-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(_RECORD.format(url=url, name=security.keys.name, key=security.public_key))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def is_file_guarded(url: str) -> bool:
    """``ipc://`` and ``inproc://``: reachable only through the file system or this process."""
    return url.partition("://")[0].lower() in ("ipc", "inproc")


def controller_security(bind: str, keys_dir: Path | None, name: str, insecure: bool) -> ServerSecurity | None:
    """The controller's keys for `bind`: created on loopback if missing; None for ipc:// or --insecure.

    Call `remember_controller` with the bound address once it listens.
    """
    if insecure or requires_security(bind) or (is_file_guarded(bind) and keys_dir is None):
        return server_security_for(bind, keys_dir, name=name, insecure=insecure)
    store = KeyStore(keys_dir)
    if not store.secret_path(name).exists() and not store.secret_path(name).is_symlink():
        store.create(name)
        log.info("created the controller's key pair %r in %s", name, store.root)
    return ServerSecurity(keys_dir, name, local=True)


def client_security(
    url: str, keys_dir: Path | None, name: str, server_key: str, insecure: bool
) -> ClientSecurity | None:
    """How an agent or client proves itself to the controller at `url` (None: plain text).

    Loopback: the controller recorded for `url` in the keys folder, if any (see the module
    docstring); else keys if a folder is given (--keys-dir, $FARM_KEYS) and holds the
    controller's public key (`server_key`). ipc:// and beyond loopback: as
    `farm.security.client_security_for` (beyond loopback keys are required).
    """
    if insecure or requires_security(url) or is_file_guarded(url):
        return client_security_for(url, keys_dir, name=name, server_key=server_key, insecure=insecure)
    store = KeyStore(keys_dir)
    record = record_path(store, url)
    if record.is_file():
        controller_key = read_certificate(record)[0]
        return ClientSecurity(keys_dir, _identity(store, name, controller_key), controller_key)
    if keys_dir is None:
        return None  # the default folder has no record of this address: a controller without keys
    try:
        controller_key = store.public_key(server_key)
    except SecurityError:
        return None  # a folder given, but no key for a controller here: it runs without (--insecure)
    return ClientSecurity(keys_dir, _identity(store, name, controller_key), controller_key)


def _identity(store: KeyStore, name: str, controller_key: bytes) -> str:
    """Our key pair's name: `name` if it is here, else the controller's own pair if we hold it."""
    if store.secret_path(name).exists():
        return name
    for path in sorted(store.root.glob(f"*{SECRET_SUFFIX}")):
        try:
            if store.load(path.name.removesuffix(SECRET_SUFFIX)).public == controller_key:
                return path.name.removesuffix(SECRET_SUFFIX)
        except SecurityError:
            continue
    return name  # ClientSecurity then says which key is missing
