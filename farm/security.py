"""CURVE encryption and ZAP authentication for farm's sockets, and the keys folder behind them.

A keys folder (``$FARM_KEYS``, else ``$XDG_CONFIG_HOME/farm/keys``, else ``~/.config/farm/keys``)
holds ``NAME.key`` (a public key) and ``NAME.key_secret`` (its secret, mode 0600) per identity,
and ``allowed/NAME.key`` for every public key a controller accepts. The files are pyzmq/czmq
certificates, so ``zmq.auth.load_certificate`` reads them too.

The controller wraps its ROUTER sockets with `ServerSecurity.socket_setup`; agents and submit
clients wrap their DEALERs with `ClientSecurity.socket_setup`. A peer's authenticated public key
(`authenticated_id`) is its identity, whatever id it claims.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from farm.errors import FarmError

log = logging.getLogger(__name__)

ZAP_DOMAIN = "farm"
DEFAULT_SERVER_NAME = "controller"
DEFAULT_CLIENT_NAME = "node"
ALLOWED = "allowed"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
REREAD_EVERY_S = 1.0  # how stale the allow list may be for peers already connected
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PUBLIC_TEMPLATE = """#   ZeroMQ CURVE Public Certificate, written by `farm keys`
#   Share it freely: it lets its holder's peers recognise it, nothing more.

metadata
    name = "{name}"
curve
    public-key = "{key}"
"""


class SecurityError(FarmError):
    """Keys or authentication are set up wrongly."""


class KeyFileError(SecurityError):
    """A key file is missing, unreadable, malformed or too widely readable; names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class KeyPair:
    """An identity: its name, Z85 public key and Z85 secret key (as bytes, as pyzmq takes them)."""

    name: str
    public: bytes
    secret: bytes


def default_keys_dir() -> Path:
    if os.environ.get("FARM_KEYS"):
        return Path(os.environ["FARM_KEYS"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "farm" / "keys"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SecurityError(f"bad key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")
    return name


def parse_key(text: str | bytes) -> bytes | None:
    """A Z85 key (40 characters) or a raw 32-byte key as Z85 bytes; None if it is neither."""
    if isinstance(text, bytes) and len(text) == 32:
        return z85.encode(text)
    try:
        raw = (text.encode("ascii") if isinstance(text, str) else bytes(text)).strip()
        return raw if len(raw) == 40 and len(z85.decode(raw)) == 32 else None
    except (ValueError, KeyError, IndexError, TypeError):  # UnicodeEncodeError is a ValueError
        return None


def read_certificate(path: Path, *, secret: bool = False) -> tuple[bytes, bytes | None]:
    """(public, secret) Z85 keys from a certificate file, with errors that name the file."""
    path = Path(path)
    if secret:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise KeyFileError(path, "no such key file") from None
        except OSError as exc:
            raise KeyFileError(path, f"cannot read it: {exc.strerror}") from None
        if stat.S_ISREG(mode) and mode & 0o077:
            raise KeyFileError(path, f"secret key file is open to group or others (mode "
                                     f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}`")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except FileNotFoundError:
        raise KeyFileError(path, "no such key file") from None
    except OSError as exc:
        missing = not path.exists()
        problem = "no such key file" if missing else f"cannot read it: {exc.strerror or exc}"
        raise KeyFileError(path, problem) from None
    except (ValueError, UnicodeError):
        raise KeyFileError(path, "not a key file: it has no public-key line") from None
    if parse_key(public) is None:
        raise KeyFileError(path, "malformed public key (expected 40 Z85 characters)")
    if not secret:
        return public, None
    if secret_key is None:
        raise KeyFileError(path, "has no secret-key line (is it a public key file?)")
    if parse_key(secret_key) is None:
        raise KeyFileError(path, "malformed secret key (expected 40 Z85 characters)")
    if zmq.curve_public(secret_key) != public:
        raise KeyFileError(path, "its public and secret keys do not belong together")
    return public, secret_key


def _classify(ref: str | bytes | Path) -> tuple[str, bytes | Path | str]:
    """("key", Z85 bytes), ("file", path) or ("name", text): how to read a key reference."""
    if isinstance(ref, Path):
        return "file", ref.expanduser()
    key = parse_key(ref)
    if key is not None:
        return "key", key  # Z85 keys may contain "/", so this comes before the path test
    if isinstance(ref, bytes):
        raise SecurityError(f"not a CURVE public key: {ref!r}")
    if os.sep in ref or ref.endswith((PUBLIC_SUFFIX, SECRET_SUFFIX)):
        return "file", Path(ref).expanduser()
    return "name", ref


class KeyStore:
    """A keys folder: identities (`NAME.key` + `NAME.key_secret`) and `allowed/` public keys."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_keys_dir()
        self.allowed_dir = self.root / ALLOWED

    def public_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}{PUBLIC_SUFFIX}"

    def secret_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}{SECRET_SUFFIX}"

    def allowed_path(self, name: str) -> Path:
        return self.allowed_dir / f"{check_name(name)}{PUBLIC_SUFFIX}"

    # -- identities ------------------------------------------------------------------

    def create(self, name: str, *, force: bool = False) -> KeyPair:
        """Make a new key pair; refuses to replace an existing one unless `force`."""
        public_path, secret_path = self.public_path(name), self.secret_path(name)
        existing = [p for p in (public_path, secret_path) if p.exists()]
        if existing and not force:
            raise KeyFileError(existing[0], f"key {name!r} exists already (use --force to replace it; every "
                                            "peer that trusts the old key must then be given the new one)")
        self._make_dirs()
        # Write into a private temp folder and rename into place: the secret is never readable by others.
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=self.root))
        try:
            made_public, made_secret = zmq.auth.create_certificates(tmp, name)
            os.chmod(made_secret, 0o600)
            os.chmod(made_public, 0o644)
            os.replace(made_secret, secret_path)
            os.replace(made_public, public_path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("created key pair %s in %s", name, self.root)
        return self.load(name)

    def load(self, name: str) -> KeyPair:
        """An identity with its secret (checked: present, well-formed, mode 0600, matching its .key)."""
        secret_path = self.secret_path(name)
        if not secret_path.exists() and not secret_path.is_symlink():
            hint = " (only its public key is here)" if self.public_path(name).exists() else ""
            raise KeyFileError(secret_path, f"no secret key {name!r}{hint}; "
                                            f"create one with `farm keys create {name}`")
        public, secret = read_certificate(secret_path, secret=True)
        assert secret is not None
        public_path = self.public_path(name)
        if public_path.exists() and read_certificate(public_path)[0] != public:
            raise KeyFileError(public_path, f"does not match the public key in {secret_path}")
        return KeyPair(name, public, secret)

    def public_key(self, ref: str | bytes | Path) -> bytes:
        """A public key from a Z85 key, a path to a key file, or the name of a key in this folder."""
        kind, value = _classify(ref)
        if kind == "key":
            assert isinstance(value, bytes)
            return value
        if kind == "file":
            return read_certificate(Path(value))[0]
        name = str(value)
        if _NAME.fullmatch(name):
            for path in (self.public_path(name), self.allowed_path(name), self.secret_path(name)):
                if path.exists():
                    return read_certificate(path)[0]
        raise SecurityError(f"{name!r} is not a key file, a 40-character Z85 key, "
                            f"or a key named in {self.root}")

    def add_public(self, name: str, ref: str | bytes | Path, *, force: bool = False) -> bytes:
        """Store a peer's public key as NAME.key (e.g. the controller's, on a node)."""
        key = self.public_key(ref)
        if self.secret_path(name).exists():
            raise KeyFileError(self.secret_path(name), f"{name!r} is one of this machine's own identities")
        self._write_public(self.public_path(name), name, key, force=force)
        return key

    # -- the allow list --------------------------------------------------------------

    def allow(self, ref: str | Path, *, name: str | None = None, force: bool = False) -> tuple[str, bytes]:
        """Copy a public key into allowed/ (from a file, a name here, or a Z85 key with `name`)."""
        kind, value = _classify(ref)
        if name is None:
            if kind == "file":
                name = Path(value).name.removesuffix(SECRET_SUFFIX).removesuffix(PUBLIC_SUFFIX)
            elif kind == "name":
                name = str(value)
            else:
                raise SecurityError("a bare key needs a name: farm keys allow KEY --name NAME")
        key = self.public_key(ref)
        self._write_public(self.allowed_path(name), name, key, force=force)
        log.info("allowed key %s (%s)", name, key.decode())
        return name, key

    def revoke(self, name: str) -> bytes:
        path = self.allowed_path(name)
        if not path.exists():
            names = ", ".join(self.allowed()) or "none"
            raise KeyFileError(path, f"{name!r} is not allowed (allowed: {names})")
        key = read_certificate(path)[0] if path.is_file() else b""
        path.unlink()
        log.info("revoked key %s", name)
        return key

    def allowed(self) -> dict[str, bytes]:
        """name -> public key for every file in allowed/; a malformed one is an error naming it."""
        if not self.allowed_dir.is_dir():
            return {}
        found = {}
        for path in sorted(self.allowed_dir.glob(f"*{PUBLIC_SUFFIX}")):
            found[path.name.removesuffix(PUBLIC_SUFFIX)] = read_certificate(path)[0]
        return found

    def identities(self) -> dict[str, tuple[bytes, bool]]:
        """name -> (public key, whether its secret is here); every secret is checked as `load` does."""
        found: dict[str, tuple[bytes, bool]] = {}
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.glob(f"*{SECRET_SUFFIX}")):
            name = path.name.removesuffix(SECRET_SUFFIX)
            found[name] = (self.load(name).public, True)
        for path in sorted(self.root.glob(f"*{PUBLIC_SUFFIX}")):
            found.setdefault(path.name.removesuffix(PUBLIC_SUFFIX), (read_certificate(path)[0], False))
        return found

    def listing(self) -> list[dict[str, object]]:
        """Every identity and allowed key: name, public key, secret here, allowed."""
        allowed = self.allowed()
        allowed_keys = set(allowed.values())
        identities = self.identities()
        rows: list[dict[str, object]] = [
            {"name": name, "public_key": key.decode(), "secret": has_secret, "allowed": key in allowed_keys}
            for name, (key, has_secret) in identities.items()
        ]
        for name, key in allowed.items():  # allowed keys that are no identity of the same name here
            if identities.get(name, (None,))[0] != key:
                rows.append({"name": name, "public_key": key.decode(), "secret": False, "allowed": True})
        return sorted(rows, key=lambda r: (str(r["name"]), not r["secret"]))

    # -- files -----------------------------------------------------------------------

    def _make_dirs(self) -> None:
        for folder in (self.root, self.allowed_dir):
            if not folder.is_dir():
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask

    def _write_public(self, path: Path, name: str, key: bytes, *, force: bool) -> None:
        if path.exists() and not force:
            if read_certificate(path)[0] == key:
                return
            raise KeyFileError(path, f"a different key is stored as {name!r} already "
                                     "(use --force to replace it)")
        self._make_dirs()
        fd, tmp = tempfile.mkstemp(prefix=".new-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(_PUBLIC_TEMPLATE.format(name=name, key=key.decode()))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic, and a new inode, which a running ServerSecurity notices


class _AllowList:
    """The keys a ServerSecurity accepts: asked by the ZAP thread at every handshake."""

    def __init__(self, store: KeyStore, own: KeyPair, *, local: bool = False) -> None:
        self.store = store
        self.own = own
        self.local = local
        self.names: dict[bytes, str] = {}
        self.stamp: frozenset[tuple[str, int, int, int]] | None = None
        self.refused: set[bytes] = set()
        self.checked = 0.0
        self.lock = threading.Lock()

    def _stamp(self) -> frozenset[tuple[str, int, int, int]] | None:
        # Names, inodes, sizes and mtimes: a folder's mtime alone can miss two changes in one clock tick.
        try:
            with os.scandir(self.store.allowed_dir) as entries:
                return frozenset((e.name, e.inode(), (st := e.stat()).st_size, st.st_mtime_ns)
                                 for e in entries if e.name.endswith(PUBLIC_SUFFIX))
        except OSError:
            return None

    def reload(self) -> list[str]:
        with self.lock:
            stamp = self._stamp()
            allowed = self.store.allowed()
            names = {key: name for name, key in allowed.items()}
            names.setdefault(self.own.public, self.own.name)  # whoever holds our secret is us
            self.names, self.stamp = names, stamp
            self.refused.clear()
        if not allowed:  # expected on loopback, where local clients hold the controller's own key
            log.log(logging.INFO if self.local else logging.WARNING,
                    "no keys in %s: only holders of this controller's own key can connect",
                    self.store.allowed_dir)
        return sorted(allowed)

    def allows(self, key: bytes, *, max_age: float = 0.0) -> bool:
        """Whether a Z85 public key may connect, after re-reading allowed/ if it changed.

        The folder is looked at when the last look is older than `max_age` seconds.
        """
        now = time.monotonic()
        if now - self.checked >= max_age:
            self.checked = now
            if self._stamp() != self.stamp:  # `farm keys allow/revoke` changed the folder
                try:
                    self.reload()
                except SecurityError as exc:
                    log.error("keeping the previous allow list: %s", exc)
        name = self.names.get(key)
        if name is None:
            if key not in self.refused and len(self.refused) < 1000:
                self.refused.add(key)
                log.warning("refused a connection from unlisted key %s", key.decode())
            return False
        log.debug("authenticated %s (%s)", name, key.decode())
        return True


class _ZapHandler:
    """Answers libzmq's ZAP requests (RFC 27) for one context, in a thread.

    pyzmq's ThreadAuthenticator would do, but it closes its socket without unbinding, so a
    new one on the same context can fail with EADDRINUSE for a while after `stop()`.
    """

    ENDPOINT = "inproc://zeromq.zap.01"

    def __init__(self, context: zmq.Context, allow: _AllowList) -> None:
        self.allow = allow
        self.sock = context.socket(zmq.REP)
        self.sock.linger = 0
        try:
            self.sock.bind(self.ENDPOINT)
        except zmq.ZMQError as exc:
            self.sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise SecurityError("a ZAP authenticator already runs on this ZeroMQ context; "
                                    "stop the other ServerSecurity first") from None
            raise
        self.refusals = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="farm-zap", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.sock.poll(100):
                    request = self.sock.recv_multipart()
                    try:
                        reply = self.answer(request)
                    except Exception:  # a bug here must refuse the peer, not kill the thread
                        log.exception("ZAP handler failed")
                        request_id = request[1] if len(request) > 1 else b""
                        reply = [b"1.0", request_id, b"500", b"internal error", b"", b""]
                    self.sock.send_multipart(reply)
        finally:
            self.sock.unbind(self.ENDPOINT)  # synchronous for inproc: the address is free again at once
            self.sock.close()

    def answer(self, request: list[bytes]) -> list[bytes]:
        reply = self._judge(request)
        if reply[2] != b"200":
            self.refusals += 1
        return reply

    def _judge(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6:
            request_id = request[1] if len(request) > 1 else b""
            return [b"1.0", request_id, b"400", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism, *credentials = request

        def reply(code: bytes, text: bytes, user: bytes = b"") -> list[bytes]:
            return [b"1.0", request_id, code, text, user, b""]

        if version != b"1.0":
            return reply(b"400", b"unknown ZAP version")
        if mechanism == b"NULL" and domain != ZAP_DOMAIN.encode():
            return reply(b"200", b"OK", b"anonymous")  # someone else's socket: not ours to judge
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            log.warning("refused a %s connection from %s: only CURVE is accepted",
                        mechanism.decode("ascii", "replace"), address.decode("ascii", "replace"))
            return reply(b"400", b"CURVE only")
        key = z85.encode(credentials[0])
        if not self.allow.allows(key):
            return reply(b"400", b"key not allowed")
        return reply(b"200", b"OK", key)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


class ServerSecurity:
    """CURVE server keys and a ZAP authenticator for the controller's sockets.

    One per ZeroMQ context (ZAP listens on a fixed inproc address); it must outlive the
    sockets it set up. Sockets enforce the ZAP domain, so if the authenticator stops they
    refuse every handshake rather than accept every one. `local`: a loopback controller, whose
    clients use its own key, so an empty allow list is expected, not worth a warning.
    """

    def __init__(self, keys_dir: Path | str | None = None, name: str = DEFAULT_SERVER_NAME, *,
                 context: zmq.Context | None = None, local: bool = False) -> None:
        self.store = KeyStore(keys_dir)
        self.keys = self.store.load(name)
        self.context = context or zmq.Context.instance()
        self._allow = _AllowList(self.store, self.keys, local=local)
        self._allow.reload()
        self._zap: _ZapHandler | None = _ZapHandler(self.context, self._allow)
        self._refusals_at_stop = 0

    @property
    def public_key(self) -> str:
        return self.keys.public.decode()

    @property
    def refusals(self) -> int:
        """Handshakes refused so far (unlisted keys, other mechanisms): a figure for status."""
        return self._zap.refusals if self._zap is not None else self._refusals_at_stop

    def socket_setup(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE server that admits only allowed keys (call before bind)."""
        if self._zap is None:
            raise SecurityError("this ServerSecurity is stopped")
        if sock.context is not self.context:
            raise SecurityError("the socket belongs to another ZeroMQ context than the authenticator's")
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN.encode()
        # Without a running ZAP handler libzmq would admit any CURVE client; enforcing refuses all.
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def reload(self) -> list[str]:
        """Re-read allowed/ now (handshakes also notice changes by themselves); returns the names."""
        return self._allow.reload()

    def allows(self, user_id: str | None) -> bool:
        """Whether an authenticated key is still allowed (allowed/ is re-read at most once a second).

        A revoke refuses new handshakes at once; a peer that is already connected stays
        connected, so check its messages with this.
        """
        return user_id is not None and self._allow.allows(user_id.encode(), max_age=REREAD_EVERY_S)

    def name_of(self, user_id: str | None) -> str | None:
        """The allowed/ name of an authenticated key."""
        return self._allow.names.get(user_id.encode()) if user_id else None

    def stop(self) -> None:
        if self._zap is not None:
            self._zap.stop()
            self._refusals_at_stop = self._zap.refusals
            self._zap = None

    def __enter__(self) -> ServerSecurity:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ClientSecurity:
    """CURVE client keys for agents and submit clients."""

    def __init__(self, keys_dir: Path | str | None = None, name: str = DEFAULT_CLIENT_NAME,
                 server_public_key: str | bytes | Path = DEFAULT_SERVER_NAME) -> None:
        self.store = KeyStore(keys_dir)
        self.keys = self.store.load(name)
        try:
            self.server_key = self.store.public_key(server_public_key)
        except SecurityError as exc:
            raise SecurityError(f"the controller's public key: {exc} (copy it here with "
                                f"`farm keys import {DEFAULT_SERVER_NAME} KEY`)") from None

    @property
    def public_key(self) -> str:
        return self.keys.public.decode()

    def socket_setup(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client of the controller (call before connect)."""
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_serverkey = self.server_key


def server_security_for(bind: str, keys_dir: Path | str | None = None, *, name: str = DEFAULT_SERVER_NAME,
                        insecure: bool = False) -> ServerSecurity | None:
    """The controller's policy: keys when `bind` reaches beyond loopback or a keys folder is given.

    `insecure` turns security off, loudly when the address is not local.
    """
    if insecure:
        if requires_security(bind):
            log.warning("listening on %s WITHOUT authentication or encryption (--insecure): "
                        "anyone who can reach it can submit projects and take jobs", bind)
        return None
    if keys_dir is None and not requires_security(bind):
        return None
    try:
        return ServerSecurity(keys_dir, name)
    except KeyFileError as exc:
        raise SecurityError(f"{bind} is reachable from other machines, so the controller needs keys: {exc} "
                            "(or pass --insecure to run without authentication or encryption)"
                            if requires_security(bind) else str(exc)) from None


def client_security_for(url: str, keys_dir: Path | str | None = None, *, name: str = DEFAULT_CLIENT_NAME,
                        server_key: str | bytes | Path = DEFAULT_SERVER_NAME,
                        insecure: bool = False) -> ClientSecurity | None:
    """The agent's and submit client's policy, the mirror of `server_security_for`."""
    if insecure or (keys_dir is None and not requires_security(url)):
        return None
    return ClientSecurity(keys_dir, name, server_key)


def authenticated_id(frame: zmq.Frame) -> str | None:
    """The Z85 public key the peer authenticated with (every frame of its messages carries it).

    Receive with ``copy=False`` to get frames. None on a socket without authentication.
    """
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return user or None


def requires_security(bind_url: str) -> bool:
    """Whether a bind address is reachable from beyond this machine (so it needs keys)."""
    scheme, sep, rest = bind_url.partition("://")
    scheme = scheme.lower()
    if not sep:
        return True
    if scheme in ("ipc", "inproc"):
        return False
    if scheme not in ("tcp", "ws", "wss"):
        return True  # pgm, epgm, udp, ...: multicast or datagrams, never local only
    host = rest.split("/", 1)[0]
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.split("%", 1)[0].lower()  # an IPv6 zone such as fe80::1%eth0
    if host in ("localhost", "lo"):  # "lo" is the loopback interface's name
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return True  # "*", other host names, interface names: not known to be local
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_loopback
