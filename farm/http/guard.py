"""Who may use the HTTP API: bearer tokens, cross-site refusal, and the loopback Host check.

One ASGI middleware in front of every route, in this order:

1. **Host** (loopback binds): the ``Host`` header must name this machine (``localhost``,
   ``127.x.x.x``, ``[::1]``), so a web page that re-points its own domain at 127.0.0.1 (DNS
   rebinding) cannot read the API from the user's browser.
2. **Token** (always: a loopback port is open to every local user, not only to the owner):
   ``Authorization: Bearer TOKEN``, and nothing else. No cookie: browsers send a cookie of
   ``127.0.0.1`` to every port of that host, another user's server included. Static dashboard
   files are code, not data, and are served without a token; the page is opened once as
   ``/?access_token=TOKEN``, keeps the token in its own ``sessionStorage`` (which, unlike a
   cookie, is per origin: scheme, host *and port*) and sends it as a header, the event stream
   included (read with ``fetch``, not ``EventSource``). API routes refuse a token in their
   query string, so tokens stay out of their URLs and logs.
3. **Cross-site** (control actions: every method but GET/HEAD/OPTIONS on a route that takes
   it; a request no route takes goes on to get its 404 or 405, and no handler runs): the body must be
   declared ``Content-Type: application/json`` (which a cross-origin page cannot send without
   a CORS preflight, and this server answers none), ``Sec-Fetch-Site`` must not be
   ``cross-site`` or ``same-site``, and an ``Origin``, if sent, must be this server's own.

Control actions' bodies are at most `MAX_BODY` bytes, with a Content-Length. Refusals are
JSON ``{"error": "..."}`` with 400, 401, 403, 411, 413 or 415.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.routing import BaseRoute, Match

from farm.http.tokens import TokenStore

log = logging.getLogger(__name__)

QUERY = "access_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY = 1 << 20  # bytes of a control action's body (10,000 job keys fit)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether a host name or address reaches only this machine."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Access:
    """The server's access rules.

    ``loopback``: it listens on loopback only (the Host check applies; a token is required all
    the same). ``tokens``: the keys folder's API tokens. ``session_token``: one more accepted
    token, held in memory (`farm controller --http` on loopback, the embedded farm's ``--ui``).
    ``static_dir``: files served without a token.
    """

    loopback: bool
    tokens: TokenStore | None = None
    session_token: str | None = None
    static_dir: Path | None = None

    def valid(self, token: str) -> bool:
        if self.session_token is not None and _same(token, self.session_token):
            return True
        return self.tokens is not None and self.tokens.verify(token) is not None

    def is_static(self, path: str) -> bool:
        """Whether `path` names a file of the static folder (`/` is its index.html)."""
        if self.static_dir is None:
            return False
        relative = path.lstrip("/") or "index.html"
        if relative.startswith("api/") or relative == "metrics" or "\\" in relative or "\x00" in relative:
            return False
        parts = relative.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return False
        return (self.static_dir / relative).is_file()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


class Guard:
    """The ASGI middleware applying `Access` to every HTTP request (see the module's docstring).

    ``routes``: the app's routes, so that the cross-site checks apply to requests a route takes
    (the others are answered 404 or 405 by the router, whatever their content type); None: to all.
    """

    def __init__(self, app: ASGIApp, access: Access, routes: list[BaseRoute] | None = None) -> None:
        self.app = app
        self.access = access
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if OLD_COOKIE in headers.get("cookie", ""):
            send = _expiring_old_cookie(send)
        refusal = self._judge(scope, headers)
        if refusal is not None:
            status, message = refusal
            await _json(send, status, {"error": message},
                        [(b"www-authenticate", b'Bearer realm="farm"')] if status == 401 else [])
            return
        token = _token(headers)
        if token is not None:  # a response that lasts (the event stream) asks again while it goes on
            scope.setdefault("state", {})["token_valid"] = functools.partial(self.access.valid, token)
        await self.app(scope, receive, send)

    def _judge(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """Why the request is refused, as (status, reason), or None to let it in."""
        access = self.access
        method = scope["method"]
        path = scope["path"]
        host = headers.get("host", "")
        if access.loopback:
            hostname = urlsplit(f"//{host}").hostname or ""
            if not is_loopback(hostname):
                return (400, f"Host {host[:100]!r} is not this machine: this API listens on loopback only "
                             "and answers requests addressed to localhost or 127.0.0.1")
        if not (method in ("GET", "HEAD") and access.is_static(path)):  # the page's own files: no token
            token = _token(headers)
            if token is None:
                hint = (" (?access_token= is read by the dashboard page, /, only: it keeps tokens out of "
                        "URLs and logs)" if _query_token(scope) else "")
                return (401, "this API needs a token: send 'Authorization: Bearer TOKEN' (tokens are made "
                             "with `farm keys api-token new NAME`; `farm controller --http` on loopback "
                             f"prints a dashboard address that holds one){hint}")
            if not access.valid(token):
                return (401, "invalid token: it is unknown or revoked "
                             "(tokens are made with `farm keys api-token new NAME`)")
        if method not in SAFE_METHODS and self._routed(scope):
            return _cross_site(headers) or _too_big(headers)
        return None

    def _routed(self, scope: Scope) -> bool:
        """Whether a route (or mount) takes this path and method: a control action, to check."""
        if self.routes is None:
            return True
        return any(route.matches(scope)[0] is Match.FULL for route in list(self.routes))


def _token(headers: dict[str, str]) -> str | None:
    """The bearer token the request carries (a cookie is never read: it would reach other ports too)."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(QUERY)
    return values[0] if values else None


def _cross_site(headers: dict[str, str]) -> tuple[int, str] | None:
    """Why a control request may come from another site's page, or None."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return 415, ("control actions need 'Content-Type: application/json' "
                     "(send {} when there is nothing to say)")
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site in ("cross-site", "same-site"):
        return 403, f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != headers.get("host", "").lower():
            return 403, f"cross-site request refused (Origin {origin[:100]!r} is not this server)"
    return None


def _too_big(headers: dict[str, str]) -> tuple[int, str] | None:
    """A body we would have to read whole before knowing it is too big, or one that is."""
    if "transfer-encoding" in headers:
        return 411, "send the body with a Content-Length"
    length = headers.get("content-length", "0")
    if not length.isdigit():
        return 400, f"Content-Length {length[:20]!r} is not a number"
    if int(length) > MAX_BODY:
        return 413, f"the body is {int(length)} bytes; at most {MAX_BODY}"
    return None


#: the cookie the dashboard kept its token in before 2026-12-02: a browser that still holds one
#: sends it to every port of the host, so any answer to a request carrying it expires it
OLD_COOKIE = "farm_token="


def _expiring_old_cookie(send: Any) -> Any:
    async def expiring(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []),
                                              (b"set-cookie", b"farm_token=; Max-Age=0; Path=/")]}
        await send(message)
    return expiring


async def _json(send: Any, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *extra]})
    await send({"type": "http.response.body", "body": data})
