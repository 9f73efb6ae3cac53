"""uvicorn in a thread of the controller's process, beside (never inside) the scheduling loop.

`HttpServer` is given to `farm.controller.server.Controller(http=...)`, which calls `attach`
before its loop starts (the metrics observer then counts from the first event), `start` once
its sockets are bound, and `stop` before it stops itself. uvicorn runs its own asyncio loop in
the ``farm-http`` thread, installs no signal handlers there (it only does so in the main
thread), and reaches the controller only through its ``inproc://`` socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from farm.errors import FarmError
from farm.http.app import STATIC_DIR, create_app
from farm.http.backend import KEEPALIVE_S, Backend
from farm.http.guard import Access, is_loopback
from farm.http.limits import BACKLOG, bounded_protocol, connection_cap, quiet_accept_errors
from farm.http.metrics import Metrics
from farm.http.tokens import TokenStore

if TYPE_CHECKING:
    from farm.controller.server import Controller

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8642
START_TIMEOUT_S = 15.0
GRACEFUL_S = 2.0  # open event streams are cut after this on shutdown


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``PORT`` or ``HOST`` -> (host, port); defaults 127.0.0.1 and 8642.

    Raises `FarmError` naming the part that is wrong.
    """
    text = text.strip()
    host, port = DEFAULT_HOST, str(DEFAULT_PORT)
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        host = inner
        if rest:
            if not rest.startswith(":"):
                raise FarmError(f"--http {text!r}: expected [IPv6]:PORT")
            port = rest[1:]
    elif text.isdigit():
        port = text
    elif text.count(":") == 1:
        host, port = text.split(":")
        host = host or DEFAULT_HOST
    elif text:
        host = text  # a name, or a bare IPv6 address (no port)
        if ":" in host and not _is_ip(host):
            raise FarmError(f"--http {text!r}: write an IPv6 address with a port as [ADDRESS]:PORT")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise FarmError(f"--http {text!r}: expected HOST:PORT, a port from 0 to 65535 (127.0.0.1:8642)")
    return host, int(port)


class HttpServer:
    """The HTTP API of one controller, listening on ``host:port`` (port 0: any free one).

    Every request but the dashboard's files needs a token, on loopback too (its ports are open
    to every local user): one from ``keys_dir``'s token store, or `session_token`, one more kept
    in memory. On loopback a random session token is made when none is given, and
    `dashboard_url` holds it for the owner to open; beyond loopback the server refuses to start
    without any stored token (`FarmError`).
    `any_port_if_taken`: listen on a free port when `port` is in use. `static_dir`: the
    dashboard's files, served at ``/`` without a token (they are code, not data).
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, keys_dir: object = None,
                 session_token: str | None = None, keepalive_s: float = KEEPALIVE_S,
                 any_port_if_taken: bool = False, static_dir: Path | None = STATIC_DIR) -> None:
        self.host = host
        self.static_dir = static_dir
        self.any_port_if_taken = any_port_if_taken
        self.port = port
        self.keepalive_s = keepalive_s
        tokens = TokenStore(keys_dir)  # type: ignore[arg-type]
        if session_token is None and is_loopback(host):
            session_token = secrets.token_urlsafe(24)
        self.access = Access(loopback=is_loopback(host), tokens=tokens, session_token=session_token)
        if not self.access.loopback and not tokens.any():
            raise FarmError(f"the HTTP API on {host} would be reachable from other machines, and no API "
                            f"token exists in {tokens.path}: make one with `farm keys api-token new NAME` "
                            "(clients send it as 'Authorization: Bearer TOKEN'), or listen on 127.0.0.1")
        self.metrics = Metrics()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None
        self._backend: Backend | None = None

    @property
    def url(self) -> str:
        """The address to open, e.g. ``http://127.0.0.1:8642/`` (the port actually bound)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def dashboard_url(self) -> str | None:
        """`url` with the session token, for the owner to open once (None without a session token).
        It is a credential: print it to the owner's terminal, never to a file others may read."""
        token = self.access.session_token
        return f"{self.url}?access_token={token}" if token is not None else None

    def attach(self, controller: Controller) -> None:
        """Count the controller's events into the metrics (call before its loop starts)."""
        controller.events.observe(self.metrics.observe_published, together=True)

    def start(self, controller: Controller) -> None:
        """Listen and serve in the ``farm-http`` thread; returns once it answers. `FarmError` if it cannot."""
        backend = self._backend = Backend(controller.local_url, keepalive_s=self.keepalive_s)
        counters = controller.assets.server.counters  # plain ints, written by the file service's thread
        self.metrics.collect_from(backend, lambda: {"bytes_in": counters.bytes_in,
                                                    "bytes_out": counters.bytes_out})
        app = create_app(backend, access=self.access, metrics=self.metrics, static_dir=self.static_dir)
        app.state.run_facts = controller.run_facts  # the previews' read-only facts (farm.http.preview)
        try:
            self._sock = _listen(self.host, self.port)
        except FarmError:
            if not self.any_port_if_taken:
                raise
            self._sock = _listen(self.host, 0)
        self.port = self._sock.getsockname()[1]
        # connections bounded in number and in the time to send a request (farm.http.limits): the
        # process's last descriptors are the scheduling loop's
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="none",
                                loop="asyncio", http=bounded_protocol(connection_cap()), backlog=BACKLOG,
                                timeout_graceful_shutdown=GRACEFUL_S, server_header=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="farm-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            why = self._error or "timed out"
            raise FarmError(f"the HTTP API did not start on {self.host}:{self.port}: {why}")
        log.info("HTTP API on %s", self.url)

    def _serve(self) -> None:
        assert self._server is not None and self._sock is not None
        server, sockets = self._server, [self._sock]

        async def serve() -> None:
            asyncio.get_running_loop().set_exception_handler(quiet_accept_errors)
            await server.serve(sockets=sockets)

        try:
            with asyncio.Runner() as runner:
                runner.run(serve())
        except BaseException as exc:  # reported by start(), or logged if it ends later
            self._error = exc
            log.exception("the HTTP server stopped")

    def stop(self, timeout: float = GRACEFUL_S + 3) -> None:
        if self._backend is not None:
            self._backend.closing.set()  # event streams end at their next batch (within a second)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise FarmError(f"cannot listen for HTTP on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise FarmError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror or exc}") from None
    return sock
