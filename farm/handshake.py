"""Why a connection to the controller does not come up, in words a person can act on.

ZeroMQ reconnects silently: a refused handshake and an absent controller both look like
silence. A socket monitor tells them apart (libzmq 4.3's events, as seen on the client):

| what is wrong | what the client's monitor sees |
|---|---|
| nothing listens (RST) | CONNECT_RETRIED again and again, never CONNECTED |
| no such host, host down, a firewall that drops | CONNECT_RETRIED slowly (unreachable), or nothing at all (dropped) |
| we use keys, the controller does not (or the reverse) | HANDSHAKE_FAILED_PROTOCOL, ZMTP mechanism mismatch |
| the controller does not allow our key | HANDSHAKE_FAILED_AUTH with the ZAP status 400 |
| the key we hold for the controller is not its key | HANDSHAKE_FAILED_NO_DETAIL at every attempt (it cannot open our HELLO) |
| the controller is up but stopped or stuck (SIGSTOP) | CONNECTED (kernel), then NO_DETAIL at our timeout |

HANDSHAKE_FAILED_NO_DETAIL thus means a refusal or silence. The controller's greeting, asked for
anew with one plain connect (`server_mechanism`), tells which: one that names CURVE to a client
without keys requires keys; none at all is no answer, which waiting may mend, as for a
controller not there yet.

The monitor gives no errno, so when the connection never comes up one plain connect
(`probe`: TCP, or the ``ipc://`` socket file) tells "connection refused" from "no answer".
Nothing listening is the one problem that can mend itself (a controller still starting):
`HandshakeWatcher.absent` says a problem is of that kind, for a caller that retries anyway.

A refused key that this controller accepted before (remembered in our keys folder,
``accepted/``, after each successful join or welcome) was revoked. Messages show the
public keys to compare.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from pathlib import Path

import zmq
from zmq.utils.monitor import parse_monitor_message

from farm.errors import ConnectionLost
from farm.keys import KeyStore, SecurityError

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
NODE_INVITE = "farm keys invite"  # what a render node asks the controller's owner for
CLIENT_INVITE = "farm keys invite --client"  # and a submitting client


class HandshakeRefused(ConnectionLost, SecurityError):
    """The controller is there and refuses us (our key, keys on one side only, a wrong key for it):
    a `ConnectionLost` that waiting cannot mend, and a `SecurityError` (the CLI's code ``security``)."""
NOTHING_LISTENS_AFTER_S = 1.0  # connection refused this long (and twice at least): nobody is there
EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_HANDSHAKE_SUCCEEDED
          | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002)


def _marker(store: KeyStore, server_key: bytes, our_key: bytes) -> Path:
    digest = hashlib.sha256(server_key + b"/" + our_key).hexdigest()[:32]
    return store.root / ACCEPTED / digest


def remember_accepted(store: KeyStore, server_key: bytes, our_key: bytes, name: str | None = None) -> None:
    """Note that the controller with `server_key` admitted `our_key` (so a later refusal means revoked),
    and under which `name`, if we know it (a join says)."""
    path = _marker(store, server_key, our_key)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if name is not None or not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(name or "")
    except OSError as exc:  # a read-only keys folder: only the explanation gets poorer
        log.debug("cannot remember the controller's acceptance: %s", exc)


def accepted_before(store: KeyStore, server_key: bytes, our_key: bytes) -> bool:
    return _marker(store, server_key, our_key).exists()


def accepted_name(store: KeyStore, server_key: bytes, our_key: bytes) -> str | None:
    """The name the controller allowed our key as, if a join told us."""
    try:
        return _marker(store, server_key, our_key).read_text().strip() or None
    except OSError:
        return None


class HandshakeWatcher:
    """Watches one DEALER's connection to the controller at `url` and explains a failure.

    `our_key` / `server_key`: the Z85 keys in use (None: plain text); `store`: our keys folder,
    to tell a revoked key from one never allowed; `token`: the id of the join token whose key
    pair we use; `unreachable_after`: seconds of refused connections after which `check` says
    nothing listens (None: only `receive`'s timeout says so, for a client that may start before
    its controller); `invite`: the command whose token a refused peer of our kind asks for
    (`NODE_INVITE`, `CLIENT_INVITE`). Create it before `connect`.
    """

    def __init__(self, sock: zmq.Socket, url: str, *, our_key: bytes | None = None,
                 server_key: bytes | None = None, store: KeyStore | None = None, token: str | None = None,
                 unreachable_after: float | None = None, invite: str = NODE_INVITE) -> None:
        self.sock = sock
        self.invite = invite
        self.url = url
        self.our_key = our_key
        self.server_key = server_key
        self.store = store
        self.token = token  # a join token's id: we are proving it, not a key of our own
        self.unreachable_after = unreachable_after
        self.monitor: zmq.Socket | None = sock.get_monitor_socket(EVENTS)
        self.connected = False
        self.secured = False  # a handshake succeeded
        self.refused_since: float | None = None
        self.retries = 0
        self.no_detail = 0
        self.mismatch = False
        self.probed: str | None = None  # `probe`'s verdict, once asked
        self.auth_refused = False  # the controller's ZAP handler said no (our key, or the token's)
        self.said: str | None = None  # the last problem `check` found (a hopeless one stays true)
        self.revoked = False  # ... to our key, which it accepted before: revoked there
        self.unanswered = False  # since the last handshake that succeeded, one went unanswered (no greeting)
        self.absent = False  # the last problem was nothing listening (or no answer): a later try may work

    @property
    def lacks_keys(self) -> bool:
        """The controller requires keys and we dial it in plain text: waiting cannot change that."""
        return self.our_key is None and (self.mismatch or self.no_detail > 0)

    @property
    def hopeless(self) -> bool:
        """The controller is there and refuses us in a way that waiting cannot change: our key (or
        token) refused, keys on one side only, or a wrong key for it (three hellos it could not read;
        one alone may be a controller stopping mid-handshake)."""
        return self.auth_refused or self.mismatch or self.lacks_keys or self.no_detail >= 3

    @classmethod
    def for_setup(cls, sock: zmq.Socket, url: str, socket_setup: object,
                  unreachable_after: float | None = None, invite: str = NODE_INVITE) -> HandshakeWatcher:
        """A watcher that reads the keys from `socket_setup` when it is a `ClientSecurity`'s."""
        security = getattr(socket_setup, "__self__", None)
        keys = getattr(security, "keys", None)
        return cls(sock, url, our_key=getattr(keys, "public", None), server_key=getattr(security, "server_key", None),
                   store=getattr(security, "store", None), unreachable_after=unreachable_after, invite=invite)

    def check(self) -> str | None:
        """Read the events so far; the reason the connection cannot work, or None (fine, or not known yet).
        `absent` tells whether that reason is nobody there (yet)."""
        problem = None
        self.absent = False
        while self.monitor is not None and self.monitor.poll(0):
            event = parse_monitor_message(self.monitor.recv_multipart())
            found = self._judge(event["event"], event["value"])
            problem = problem or found
        self.said = problem or self.said
        if problem is None and self.unreachable_after is not None and self._unreachable() \
                and time.monotonic() - (self.refused_since or 0.0) >= self.unreachable_after:
            problem = self._nothing_listens()
        return problem

    def _unreachable(self) -> bool:
        return not self.connected and self.refused_since is not None and self.retries >= 2

    def _nothing_listens(self) -> str:
        self.absent = True
        if self.probed is None:
            self.probed = probe(self.url)
        path = ipc_path(self.url)
        if path is not None:  # a local socket file: refused or missing, nothing else can be wrong
            why = {MISSING: "no such socket file", "refused": "connection refused", "open": "starting"}.get(
                self.probed, self.probed)
            return (f"no answer from the controller at {self.url}: nothing listens at {path} ({why}); "
                    "is the controller running, and is that its address?")
        if self.probed in ("refused", "open"):  # open: something listens by now (a controller starting)
            return (f"no answer from the controller at {self.url}: nothing listens there (connection "
                    "refused); is the controller running, and is that its address and port?")
        return self._no_answer(self.probed)

    def _no_answer(self, why: str | None = None) -> str:
        self.absent = True
        if ipc_path(self.url) is not None:
            return (f"no answer from the controller at {self.url}{f' ({why})' if why else ''}: something "
                    "holds its socket file and does not answer; is the controller there busy or stuck?")
        where = self.url.removeprefix("tcp://")
        return (f"no answer from {where}{f' ({why})' if why else ''} — host down, wrong address, or a "
                "firewall that drops the connection; is that the controller's address and port, and does its "
                "firewall let the port in?")

    def _judge(self, kind: int, value: int) -> str | None:
        if kind == zmq.EVENT_CONNECTED:
            self.connected = True
        elif kind == zmq.EVENT_CONNECT_RETRIED:
            self.retries += 1
            if self.refused_since is None:
                self.refused_since = time.monotonic()
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.secured = True
            self.unanswered = False
            if self.store is not None and self.server_key and self.our_key:
                remember_accepted(self.store, self.server_key, self.our_key)
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
            self.mismatch = True
            return self._mismatch()
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            return f"the handshake with {self.url} failed: ZMTP protocol error {value:#x}"
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.auth_refused = True
            return self._refused(value)
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # A mechanism mismatch shows as this too, at some attempts; a wrong server key at every one;
            # and a controller that took the connection and never greeted, at our handshake's timeout.
            # Its greeting, asked for anew, tells them apart: no guessing from event counts
            knowable = self.url.startswith("tcp://") or ipc_path(self.url) is not None
            if knowable and self.unanswered:  # it greeted no one since it was asked: not asked at each retry
                return self._silent_handshake()
            mechanism = server_mechanism(self.url) if knowable else None
            if knowable and mechanism is None:
                return self._silent_handshake()
            if self.our_key is None and mechanism == b"NULL":  # it greets in plain text as we do: the
                return None  # handshake broke otherwise (a controller stopping), no keys wanted
            self.no_detail += 1
            if self.our_key is None:
                self.mismatch = mechanism is not None
                return self._mismatch()
            if self.mismatch:
                return None
            if mechanism == b"NULL":
                return self._mismatch()  # it said so in its greeting
            if self.no_detail < 3:
                return None
            return (f"the controller at {self.url} refused the secure handshake: it cannot read our hello, so "
                    f"the key we hold for it ({_show(self.server_key)}) is not its public key; compare it "
                    "with `farm keys show controller` on the controller's machine")
        return None

    def _silent_handshake(self) -> None:
        """The controller took the connection and sent no greeting (stopped, stuck): no answer, not a
        refusal, so not a problem `check` reports; `receive` says it when its wait runs out."""
        if not self.unanswered:
            log.info("the controller at %s took the connection but did not answer the handshake; trying "
                     "again", self.url)
        self.unanswered = self.absent = True

    def _mismatch(self) -> str:
        if self.our_key is None:
            return (f"the controller at {self.url} requires keys and we have none (we run --insecure, or "
                    f"hold no key for it): join it with a token (`{self.invite}` on the controller), or "
                    "give --keys-dir (or $FARM_KEYS) with the controller's public key and ours (see "
                    "docs/security.md)")
        return (f"the controller at {self.url} runs without keys (--insecure) and we use CURVE keys: "
                "start it with keys, or pass --insecure here too (plain text, anyone on the network "
                "can then read and submit)")

    def _refused(self, status: int) -> str:
        ours = _show(self.our_key)
        if self.token is not None:
            return (f"the controller at {self.url} refused join token {self.token} in the handshake (ZAP status "
                    f"{status}): it has no such token (removed, or made by another controller); ask for a new "
                    "one (`farm keys invite`)")
        if self.store is not None and self.server_key and self.our_key \
                and accepted_before(self.store, self.server_key, self.our_key):
            self.revoked = True
            return (f"the controller at {self.url} refused the secure handshake: it accepted our key {ours} "
                    "before and refuses it now, so it was revoked there (`farm keys revoke`); ask for a new "
                    f"join token (`{self.invite}`)")
        return (f"the controller at {self.url} refused the secure handshake (ZAP status {status}): our key "
                f"{ours} is not in its allowed list; on the controller run `farm keys allow --name NAME -- "
                f"'{ours}'`, or join with a token (`{self.invite}`)")

    def lost(self, problem: str) -> ConnectionLost:
        """The error to raise for `problem` (what `check` said): `HandshakeRefused` if hopeless."""
        return HandshakeRefused(problem) if self.hopeless else ConnectionLost(problem)

    def send(self, frames: list[bytes], timeout: float) -> None:
        """Queue a message on the socket; `ConnectionLost` (`HandshakeRefused`: the controller refuses
        us) if it cannot be queued within `timeout` seconds: libzmq drops a DEALER's connection after a
        failed handshake and does not dial again, so a plain send would then block for ever."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
            problem = self.check() or (self.said if self.hopeless else None)  # (read by an earlier request)
            if problem is not None:
                raise self.lost(problem)
            if time.monotonic() >= deadline:
                raise ConnectionLost(f"cannot reach the controller at {self.url}: no connection to send on "
                                     f"for {timeout:.0f}s")
            self.sock.poll(250, zmq.POLLOUT)

    def receive(self, timeout: float, *, what: str | None = None) -> list[bytes]:
        """The next message on the socket; `ConnectionLost` saying why if the connection cannot work."""
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        if self.monitor is not None:
            poller.register(self.monitor, zmq.POLLIN)
        while True:
            problem = self.check()
            if problem is not None:
                raise self.lost(problem)
            left = deadline - time.monotonic()
            if left <= 0:
                if self._unreachable():
                    raise ConnectionLost(self._nothing_listens())
                if not self.connected and (self.url.startswith("tcp://") or ipc_path(self.url) is not None):
                    self.probed = probe(self.url)
                    if self.probed != "open":
                        raise ConnectionLost(self._nothing_listens() if self.probed == "refused"
                                             else self._no_answer(f"nothing in {timeout:.0f}s"))
                silence = f"no answer from the controller at {self.url} for {timeout:.0f}s"
                silence += f" (waiting for {what})" if what else ""
                if self.unanswered:  # up, as far as the kernel goes; said so: not nobody there, nor keys
                    silence += ": it takes the connection but answers no handshake (stopped, or stuck?)"
                raise ConnectionLost(silence)
            events = dict(poller.poll(int(min(left, 0.25) * 1000) + 1))
            if events.get(self.sock):
                return self.sock.recv_multipart()

    def close(self) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None


MISSING = "missing"  # `probe`: no socket file at an ipc:// address


def ipc_path(url: str) -> str | None:
    """The socket file of an ``ipc://PATH`` address (ZeroMQ's Unix domain socket), else None."""
    return url.removeprefix("ipc://") if url.startswith("ipc://") else None


def _connect(url: str, timeout: float) -> socket.socket:
    """A plain connection to a ``tcp://HOST:PORT``, or to the socket file of an ``ipc://PATH``
    (`OSError`, `ValueError` for an address of neither kind)."""
    path = ipc_path(url)
    if path is None:
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(path)
    except BaseException:
        conn.close()
        raise
    return conn


def probe(url: str, timeout: float = 2.0) -> str:
    """One plain connect to a ``tcp://HOST:PORT`` or to the socket file of an ``ipc://PATH``:
    "open", "refused" (RST, or a socket file nobody listens on: nothing listens), `MISSING`
    (no file at PATH), or why there was no answer ("timed out", "host unreachable", ...)."""
    path = ipc_path(url)
    try:
        if path is not None and not os.path.lexists(path):
            return MISSING
        with _connect(url, timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return f"no {'TCP ' if path is None else ''}answer in {timeout:.0f}s"
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc)


def server_mechanism(url: str, timeout: float = 2.0) -> bytes | None:
    """The security mechanism a ZMTP 3 server at ``tcp://HOST:PORT`` or ``ipc://PATH`` names in its
    greeting (b"NULL", b"CURVE", ...; RFC 23/ZMTP: 10 bytes signature, 2 version, 20 mechanism), or
    None: no greeting within `timeout` seconds (a server stopped or stuck; or none there)."""
    try:
        with _connect(url, timeout) as conn:
            conn.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00")  # our signature and version
            greeting = b""
            while len(greeting) < 32:
                chunk = conn.recv(64 - len(greeting))
                if not chunk:
                    return None
                greeting += chunk
    except (OSError, ValueError):
        return None
    return greeting[12:32].rstrip(b"\x00") or None


def _show(key: bytes | None) -> str:
    return key.decode() if key else "(none)"
