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
controller. A join (``--join URL#KEY.TOKEN``) records the controller's address and key too
(``joined/ADDRESS.key``), so ``--controller URL`` alone dials it with keys, loopback included; it
never writes ``controller.key``, the name of this user's own controller's key pair. An
address with neither record is dialled in plain text unless a keys folder is given and holds
the controller's key, as before (a controller started with ``--insecure``, or a library
`Controller` in a test, removes or never writes a record).

A controller bound beyond loopback (``tcp://0.0.0.0:5555``, a LAN address) records itself
too: a client of the same user on the same machine, dialling loopback or one of this machine's
addresses on that port, finds the record the same way (keys are required there in any case).

``ipc://`` addresses are guarded by the file system instead (the socket's folder mode), and
addresses beyond loopback keep the rule of `farm.security`: keys are required. A client with no
key pair for such a controller is told how to get one (a client token, or --key).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from farm.security import (
    DEFAULT_SERVER_NAME,
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
JOINED = "joined"  # the keys folder's record of the addresses of controllers we joined with a token
_RECORD = """#   ZeroMQ CURVE Public Certificate, written by farm
#   The controller {who} {url} proves it holds this key.

metadata
    name = "{name}"
curve
    public-key = "{key}"
"""


def record_path(store: KeyStore, url: str, folder: str = LOCAL) -> Path:
    """Where the record for an address lives: ``local/tcp-127.0.0.1-5555.key`` (or ``joined/...``).

    ``localhost`` is recorded as 127.0.0.1, so a client may name the controller either way.
    """
    url = url.lower().replace("://localhost:", "://127.0.0.1:")
    return store.root / folder / (re.sub(r"[^a-z0-9.]+", "-", url).strip("-") + PUBLIC_SUFFIX)


_WILDCARDS = ("0.0.0.0", "[::]", "*")
_ADDRESS = re.compile(r"tcp://(\[[^\]]*\]|[^:/]+):(\d+)$", re.IGNORECASE)


def local_record(store: KeyStore, url: str) -> Path | None:
    """The record of our controller serving `url`: its own, or a wildcard bind's on the same port
    when `url`'s host is this machine (loopback or one of its addresses); None if there is none."""
    exact = record_path(store, url)
    if exact.is_file():
        return exact
    match = _ADDRESS.match(url.strip())
    if match is None or not _is_this_machine(match.group(1).strip("[]")):
        return None
    for wildcard in _WILDCARDS:
        path = record_path(store, f"tcp://{wildcard}:{match.group(2)}")
        if path.is_file():
            return path
    return None


def local_controller(store: KeyStore, default: str) -> str | None:
    """The address to dial this user's controller on this machine at (from its records), or None.

    `default` (tcp://127.0.0.1:5555) first; else any recorded tcp controller, a wildcard bind
    dialled on loopback.
    """
    if local_record(store, default) is not None:
        return default
    for path in sorted((store.root / LOCAL).glob(f"tcp-*{PUBLIC_SUFFIX}")):
        host, _, port = path.name.removesuffix(PUBLIC_SUFFIX).removeprefix("tcp-").rpartition("-")
        if port.isdigit():
            return f"tcp://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    return None


def _is_this_machine(host: str) -> bool:
    if host.lower() in ("localhost", "::1") or host.startswith("127."):
        return True
    try:
        from farm.discovery import local_addresses  # ifaddr: loaded only when a LAN address is dialled

        return host in local_addresses()
    except (ImportError, OSError):
        return False


def remember_controller(store: KeyStore, url: str, security: ServerSecurity | None) -> None:
    """Record that our controller listens on `url` with this key (None: in plain text, so forget it)."""
    path = record_path(store, url)
    if security is None:
        path.unlink(missing_ok=True)
        return
    _write_record(path, url, security.keys.name, security.public_key, "of this user that listens on")


def remember_joined(store: KeyStore, url: str, server_key: bytes) -> None:
    """Record that the controller we joined at `url` has this key: later commands naming only
    ``--controller URL`` then dial it with keys, whatever its address (loopback included)."""
    _write_record(record_path(store, url, JOINED), url, "controller", server_key, "we joined at")


def joined_keys(store: KeyStore) -> dict[bytes, str]:
    """Public key -> the address we joined it at, for every controller recorded in ``joined/``
    (a record moved there without one, by `move_joined_key`, is named by its file)."""
    found: dict[bytes, str] = {}
    for path in sorted((store.root / JOINED).glob(f"*{PUBLIC_SUFFIX}")):
        try:
            key = read_certificate(path)[0]
            where = _JOINED_AT.search(path.read_text(errors="replace"))
        except (SecurityError, OSError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            continue
        found.setdefault(key, where.group(1) if where else f"{JOINED}/{path.name}")
    return found


_JOINED_AT = re.compile(r"we joined at (\S+) proves")


def move_joined_key(store: KeyStore, name: str) -> bool:
    """Move ``NAME.key`` into ``joined/`` when it is the public key, alone, of a controller we joined:
    joins before this version kept it as ``controller.key``, which then stopped this user's own
    controller from making its key pair. True if moved.

    A controller we joined: a ``joined/`` record holds its key, or it accepted one of our own key
    pairs (``accepted/``). Any other public-only key (`farm keys import`) is left where it is.
    """
    public, secret = store.public_path(name), store.secret_path(name)
    if secret.exists() or secret.is_symlink() or not public.is_file():
        return False
    key = read_certificate(public)[0]
    known = joined_keys(store)
    if key not in known and not _accepted_one_of_ours(store, key):
        return False
    if key in known:
        public.unlink()  # its record in joined/ keeps it, by address
        where = f"{JOINED}/ holds it already, for {known[key]}"
    else:
        target = store.root / JOINED / f"{name}-before-own{PUBLIC_SUFFIX}"
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.replace(public, target)
        where = f"moved it to {target}"
    log.warning("%s was the public key of a controller we joined, not a key pair of this user's: %s "
                "(the join keeps working)", public, where)
    return True


def _accepted_one_of_ours(store: KeyStore, server_key: bytes) -> bool:
    from farm.handshake import accepted_before  # handshake imports zmq's monitor: only when needed

    for path in store.root.glob(f"*{SECRET_SUFFIX}"):
        try:
            ours = read_certificate(store.public_path(path.name.removesuffix(SECRET_SUFFIX)))[0]
        except SecurityError:
            continue
        if accepted_before(store, server_key, ours):
            return True
    return False


def _write_record(path: Path, url: str, name: str, key: bytes | str, who: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".new-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(_RECORD.format(who=who, url=url, name=name, key=key.decode() if isinstance(key, bytes) else key))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def is_file_guarded(url: str) -> bool:
    """``ipc://`` and ``inproc://``: reachable only through the file system or this process."""
    return url.partition("://")[0].lower() in ("ipc", "inproc")


def controller_security(bind: str, keys_dir: Path | None, name: str, insecure: bool) -> ServerSecurity | None:
    """The controller's keys for `bind`: created on loopback if missing; None for ipc:// or --insecure.

    Call `remember_controller` with the bound address once it listens.
    """
    store = KeyStore(keys_dir)
    if not insecure and not (is_file_guarded(bind) and keys_dir is None):  # keys in use: are they ours?
        _check_own(store, name)
    if insecure or requires_security(bind) or (is_file_guarded(bind) and keys_dir is None):
        return server_security_for(bind, keys_dir, name=name, insecure=insecure)
    if not store.secret_path(name).exists() and not store.secret_path(name).is_symlink():
        store.create(name)
        log.info("created the controller's key pair %r in %s", name, store.root)
    return ServerSecurity(keys_dir, name, local=True)


def _check_own(store: KeyStore, name: str) -> None:
    """The key pair `name` can be this controller's: a joined controller's public key kept under
    that name moves to ``joined/``; another public key alone there is an error saying what to do."""
    public, secret = store.public_path(name), store.secret_path(name)
    if move_joined_key(store, name) or secret.exists() or secret.is_symlink() or not public.exists():
        return
    raise SecurityError(f"{public} holds only a public key (another controller's, stored with `farm keys "
                        f"import`?), not a key pair of this user's, so it cannot be this controller's key: "
                        f"start it with --key NAME (a key pair of that name, made if missing on loopback), "
                        f"or move {public} away if nothing here needs it")


def client_security(
    url: str, keys_dir: Path | None, name: str, server_key: str, insecure: bool
) -> ClientSecurity | None:
    """How an agent or client proves itself to the controller at `url` (None: plain text).

    Loopback: the controller recorded for `url` in the keys folder, if any (ours, see the module
    docstring, or one we joined at `url`); else keys if a folder is given (--keys-dir, $FARM_KEYS)
    and holds the controller's public key (`server_key`). ipc:// and beyond loopback: as
    `farm.security.client_security_for` (beyond loopback keys are required).
    """
    if insecure or is_file_guarded(url):
        return client_security_for(url, keys_dir, name=name, server_key=server_key, insecure=insecure)
    store = KeyStore(keys_dir)
    joined = record_path(store, url, JOINED)
    record = local_record(store, url)
    if record is None and joined.is_file():  # what the join promised: --controller URL is enough
        return _remote(url, store, keys_dir, name, str(joined))
    if record is not None:
        controller_key = read_certificate(record)[0]
        # our own controller: `name` if it allows it (a default `client` pair may be for a controller
        # we joined), else the controller's own key pair, which it always admits; a pair named with
        # --key is used as named, allowed or not
        fallback = name in _DEFAULT_PAIRS and not _allowed_here(store, name)
        ours = _identity(store, name, controller_key, mine=fallback)
        return ClientSecurity(keys_dir, ours, controller_key)
    if requires_security(url):
        return _remote(url, store, keys_dir, name, server_key)
    if keys_dir is None:
        # no record of this address: a controller without keys (--insecure, a library one). The
        # default folder's `controller` key may be another one's (even ours, on another port).
        return None
    try:
        controller_key = store.public_key(server_key)
    except SecurityError:
        return None  # a folder given, but no key for a controller here: it runs without (--insecure)
    return ClientSecurity(keys_dir, _identity(store, name, controller_key), controller_key)


def _remote(url: str, store: KeyStore, keys_dir: Path | None, name: str, server_key: str) -> ClientSecurity:
    """Keys for a controller beyond loopback: ours (`name`, else the controller's own pair if we hold
    it), or an error saying how to get a key pair it allows."""
    try:
        controller_key: bytes | None = store.public_key(server_key)
    except SecurityError:
        # the one controller we joined, as when joins kept its key as `controller`; else
        # ClientSecurity says how to get it, unless we lack our own pair too
        controller_key = _only_joined(store, url, server_key)
    identity = _identity(store, name, controller_key) if controller_key else name
    if not store.secret_path(identity).exists() and not store.secret_path(identity).is_symlink():
        if name == "node":
            how = "on the controller run `farm keys invite`, then here `farm agent --join 'URL#KEY.TOKEN'` once"
        else:
            how = ("on the controller run `farm keys invite --client`, then here `farm submit --join "
                   "'URL#KEY.TOKEN' PROJECT` once (later commands need only --controller)")
        raise SecurityError(f"no key pair of ours for the controller at {url} ({store.secret_path(name)} is "
                            f"missing): {how}; or name a key pair in {store.root} that it allows with --key NAME")
    return ClientSecurity(keys_dir, identity, controller_key if controller_key else server_key)


def _only_joined(store: KeyStore, url: str, server_key: str) -> bytes | None:
    """The key of the controller we joined when `server_key` is the default name and we joined one;
    None when we joined none; an error naming them when we joined several (which one is at `url`?)."""
    if server_key != DEFAULT_SERVER_NAME:
        return None
    joined = joined_keys(store)
    if len(joined) > 1:
        raise SecurityError(f"no key for the controller at {url}: we joined several controllers, at "
                            f"{', '.join(sorted(joined.values()))}, none at this address; dial it as it was "
                            "joined, or name its key with --server-key")
    return next(iter(joined), None)


#: the key pairs clients and agents use unless --key names one
_DEFAULT_PAIRS = ("client", "node")


def _allowed_here(store: KeyStore, name: str) -> bool:
    """Whether this folder's controller allows our key pair `name`."""
    try:
        return store.public_key(name) in store.allowed().values()
    except SecurityError:
        return False


def _identity(store: KeyStore, name: str, controller_key: bytes, *, mine: bool = False) -> str:
    """Our key pair's name: `name` if it is here, else the controller's own pair if we hold it
    (`mine`: that pair first, then `name`)."""
    if not mine and store.secret_path(name).exists():
        return name
    for path in sorted(store.root.glob(f"*{SECRET_SUFFIX}")):
        try:
            if store.load(path.name.removesuffix(SECRET_SUFFIX)).public == controller_key:
                return path.name.removesuffix(SECRET_SUFFIX)
        except SecurityError:
            continue
    return name  # ClientSecurity then says which key is missing
