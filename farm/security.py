"""CURVE encryption and ZAP authentication for farm's sockets.

The keys behind them live in a keys folder (`farm.keys`). The controller wraps its ROUTER
sockets with `ServerSecurity.socket_setup`; agents and submit clients wrap their DEALERs with
`ClientSecurity.socket_setup`. A peer's authenticated public key (`authenticated_id`) is what
admits it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import threading
import time
from pathlib import Path

import zmq
from zmq.utils import z85

from farm.keys import (  # re-exported: farm.security was their home
    ALLOWED,
    DEFAULT_ROLE,
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    KeyFileError,
    KeyPair,
    KeyStore,
    SecurityError,
    check_name,
    default_keys_dir,
    parse_key,
    read_certificate,
)
from farm.lowfds import Throttled, out_of_fds
from farm.tokens import TokenStore

log = logging.getLogger(__name__)

ZAP_DOMAIN = "farm"
JOIN_DOMAIN = "farm+join"  # the job socket's domain: there a join token's key pair may redeem it, nothing else
JOINING = "join:"  # User-Id prefix of a peer that proved a join token and may only redeem it (farm.join)
DEFAULT_SERVER_NAME = "controller"
DEFAULT_CLIENT_NAME = "node"
REREAD_EVERY_S = 1.0  # how stale the allow list may be for peers already connected

__all__ = [
    "ALLOWED", "PUBLIC_SUFFIX", "SECRET_SUFFIX", "ClientSecurity", "KeyFileError", "KeyPair", "KeyStore",
    "SecurityError", "ServerSecurity", "allowed_roles", "authenticated_id", "check_name",
    "client_security_for", "default_keys_dir", "parse_key", "read_certificate", "requires_security", "server_security_for",
]


def allowed_roles(store: KeyStore, tokens: TokenStore | None = None) -> dict[bytes, str]:
    """Allowed public key -> its role ("agent", "client" or "both": `farm.keys.ROLES`).

    The role written beside the key; for a key allowed before roles were written, the kind of
    join token it joined with (`TokenStore.joined_roles`), else DEFAULT_ROLE.
    """
    marks = store.role_marks()
    joined = (tokens or TokenStore(store)).joined_roles() if None in marks.values() else {}
    return {key: marks.get(name) or joined.get(key) or DEFAULT_ROLE for name, key in store.allowed().items()}


def role_refusal(name: str, role: str, side: str) -> str | None:
    """Why a key of `role` may not send a message of `side` ("agent" or "client"); None if it may."""
    if role in ("both", side):
        return None
    if side == "client":
        return (f"key {name} is a render node's key (role agent): it may not submit, steer or look at "
                "projects and the farm; use a client key (farm keys invite --client, then farm submit "
                f"--join), or on the controller run farm keys allow --role both {name}")
    return (f"key {name} is a client's key (role client): it may not serve as an agent; give the node "
            "its own key (farm keys invite, then farm agent --join on the node), or on the controller "
            f"run farm keys allow --role both {name}")


class _AllowList:
    """The keys a ServerSecurity accepts: asked by the ZAP thread at every handshake."""

    def __init__(self, store: KeyStore, own: KeyPair, *, local: bool = False) -> None:
        self.store = store
        self.own = own
        self.local = local
        self.names: dict[bytes, str] = {}
        self.roles: dict[bytes, str] = {}
        self.revoked: dict[bytes, str] = {}
        self.tokens = TokenStore(store)
        self.token_keys: dict[bytes, str] = {}  # token public key -> token id
        self.tokens_stamp: frozenset[tuple[str, int]] | None = None
        self.stamp: frozenset[tuple[str, int, int, int]] | None = None
        self.refused: set[bytes] = set()
        self.checked = 0.0
        self.lock = threading.Lock()
        self.short = Throttled(log)  # out of descriptors: a line a minute, not one per message

    def _stamp(self) -> frozenset[tuple[str, int, int, int]] | None:
        # Names, inodes, sizes and mtimes: a folder's mtime alone can miss two changes in one clock tick.
        try:
            with os.scandir(self.store.allowed_dir) as entries:
                return frozenset((e.name, e.inode(), (st := e.stat()).st_size, st.st_mtime_ns)
                                 for e in entries if e.name.endswith(PUBLIC_SUFFIX))
        except OSError as exc:
            if out_of_fds(exc):  # cannot look now (a flood of connections): keep what we have
                self._cannot_read(exc)
                return self.stamp
            return None

    def _cannot_read(self, exc: OSError) -> None:
        self.short(logging.ERROR, "cannot read %s, keeping the allow list read before: %s",
                   self.store.allowed_dir, exc)

    def reload(self) -> list[str]:
        with self.lock:
            stamp = self._stamp()
            allowed = self.store.allowed()
            names = {key: name for name, key in allowed.items()}
            names.setdefault(self.own.public, self.own.name)  # whoever holds our secret is us
            roles = allowed_roles(self.store, self.tokens)
            roles[self.own.public] = "both"
            self.names, self.roles, self.stamp = names, roles, stamp
            self.revoked = {key: name for name, key in self.store.revoked().items()}
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
        self.fresh(max_age)
        name = self.names.get(key)
        if name is None:
            if key not in self.refused and len(self.refused) < 1000:
                self.refused.add(key)
                revoked = self.revoked.get(key)
                log.warning("refused a connection from %s key %s", f"revoked ({revoked})" if revoked else "unlisted",
                            key.decode())
            return False
        log.debug("authenticated %s (%s)", name, key.decode())
        return True

    def fresh(self, max_age: float) -> None:
        """Re-read allowed/ if it changed, when the last look is older than `max_age` seconds."""
        now = time.monotonic()
        if now - self.checked >= max_age:
            self.checked = now
            if self._stamp() != self.stamp:  # `farm keys allow/revoke` changed the folder
                try:
                    self.reload()
                except SecurityError as exc:
                    log.error("keeping the previous allow list: %s", exc)
                except OSError as exc:  # out of descriptors between the look and the read
                    if not out_of_fds(exc):
                        raise
                    self._cannot_read(exc)

    def token_for(self, key: bytes) -> str | None:
        """The id of the join token whose key pair `key` is (`farm.tokens.token_keys`), else None."""
        stamp = self.tokens.stamp()
        if stamp != self.tokens_stamp:  # a token made, used or revoked
            try:
                self.token_keys, self.tokens_stamp = self.tokens.by_key(), stamp
            except OSError as exc:
                if not out_of_fds(exc):
                    raise
                self._cannot_read(exc)  # the tokens known before stay known
        return self.token_keys.get(key)


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
        if mechanism == b"NULL" and domain not in (ZAP_DOMAIN.encode(), JOIN_DOMAIN.encode()):
            return reply(b"200", b"OK", b"anonymous")  # someone else's socket: not ours to judge
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            log.warning("refused a %s connection from %s: only CURVE is accepted",
                        mechanism.decode("ascii", "replace"), address.decode("ascii", "replace"))
            return reply(b"400", b"CURVE only")
        key = z85.encode(credentials[0])
        if domain == JOIN_DOMAIN.encode() and (token := self.allow.token_for(key)) is not None:
            return reply(b"200", b"OK", (JOINING + token).encode())  # it may send a JOIN (farm.join), nothing else
        if not self.allow.allows(key):
            return reply(b"400", b"key revoked" if key in self.allow.revoked else b"key not allowed")
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

    def socket_setup(self, sock: zmq.Socket, *, enrolment: bool = False) -> None:
        """Make `sock` a CURVE server that admits only allowed keys (call before bind).

        `enrolment` (the controller's job socket): a peer using a join token's key pair
        (`farm.tokens.token_keys`) also completes the handshake, marked (`joining`) so that it
        may only redeem that token.
        """
        if self._zap is None:
            raise SecurityError("this ServerSecurity is stopped")
        if sock.context is not self.context:
            raise SecurityError("the socket belongs to another ZeroMQ context than the authenticator's")
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_server = True
        sock.zap_domain = (JOIN_DOMAIN if enrolment else ZAP_DOMAIN).encode()
        # Without a running ZAP handler libzmq would admit any CURVE client; enforcing refuses all.
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def reload(self) -> list[str]:
        """Re-read allowed/ now (handshakes also notice changes by themselves); returns the names."""
        return self._allow.reload()

    def refresh(self) -> None:
        """Re-read allowed/ now if it changed since the last look (cheap: one scan of the folder)."""
        self._allow.fresh(0.0)

    def refused_keys(self) -> list[str]:
        """The public keys refused at the handshake since allowed/ last changed (at most 1000)."""
        return sorted(key.decode() for key in tuple(self._allow.refused))  # a copy: the ZAP thread adds

    def revoked_names(self, keys: list[str]) -> dict[str, str]:
        """Of these public keys, those revoked here (`farm keys revoke`): key -> the name it had."""
        revoked = self._allow.revoked
        return {key: revoked[key.encode()] for key in keys if key.encode() in revoked}

    def allows(self, user_id: str | None) -> bool:
        """Whether an authenticated key is still allowed (allowed/ is re-read at most once a second).

        A revoke refuses new handshakes at once; a peer that is already connected stays
        connected, so check its messages with this.
        """
        return user_id is not None and self._allow.allows(user_id.encode(), max_age=REREAD_EVERY_S)

    def keys_with_role(self, *roles: str) -> list[str]:
        """The allowed public keys (Z85, sorted) whose role is one of `roles`; the controller's own
        key has "both". From the allow list in memory (allowed/ re-read at most once a second)."""
        self._allow.fresh(REREAD_EVERY_S)
        return sorted(key.decode() for key, role in self._allow.roles.items() if role in roles)

    @property
    def tokens(self) -> TokenStore:
        return self._allow.tokens

    @staticmethod
    def joining(user_id: str | None) -> str | None:
        """The token id of a peer admitted only to redeem that join token; None for anyone else."""
        if user_id and user_id.startswith(JOINING):
            return user_id[len(JOINING):]
        return None

    def role_of(self, user_id: str | None) -> str | None:
        """The role of an authenticated key (`farm.keys.ROLES`; the controller's own key: "both")."""
        return self._allow.roles.get(user_id.encode()) if user_id else None

    def refusal(self, user_id: str | None, side: str) -> str | None:
        """Why this key may not send a message of `side` ("agent": HELLO, RESULTS, ...; "client":
        SUBMIT, STATUS, CONTROL, ...), as the ERROR to answer; None if it may (or is not ours to judge)."""
        role = self.role_of(user_id)
        if role is None:  # an in-process peer, or a key revoked a moment ago (`allows` says so)
            return None
        return role_refusal(self.name_of(user_id) or str(user_id), role, side)

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
