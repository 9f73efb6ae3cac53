"""Bounds on the HTTP server's connections: how many are open, and how long one may take to ask.

uvicorn takes every connection it is offered and waits for its request headers without a time
limit; its ``limit_concurrency`` answers 503 only once the headers are in. A local user holding
a thousand half-sent requests would so take every descriptor of the controller's process,
whose loop schedules jobs. `bounded_protocol` makes uvicorn's h11 protocol class with:

- a cap on open connections (`connection_cap`: a quarter of the process's open files limit, at
  most `MAX_CONNECTIONS`): a connection over it closes the oldest one still waiting for its
  request headers, or is itself closed at once when every open one is busy with a request;
- a time limit (`HEADER_S`) on the request headers, from the connection's start or from the end
  of its previous response: a connection that has not sent them by then is closed.

A request in progress (an event stream included) is never cut by either.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from farm.lowfds import Throttled, out_of_fds

log = logging.getLogger(__name__)

HEADER_S = 10.0  # to send a request's headers
MAX_CONNECTIONS = 1000
MIN_CONNECTIONS = 16
# The listen queue; also the most connections asyncio accepts at a time, before the protocol sees
# any: a few such batches may be open beyond the cap for a moment.
BACKLOG = 16


def connection_cap() -> int:
    """The most HTTP connections open at once: a quarter of the open files limit (less the
    accepted ones not yet counted), 16 to 1000."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, (soft - 4 * BACKLOG) // 4))


def bounded_protocol(cap: int, header_s: float = HEADER_S) -> type[H11Protocol]:
    """uvicorn's h11 protocol, bounded (see the module's docs); one class per server: it holds their count."""

    class Bounded(_Bounded):
        limit = cap
        header_timeout = header_s
        waiting: ClassVar[dict[_Bounded, None]] = {}  # connections waiting for headers, oldest first
        said = Throttled(log)

    return Bounded


class _Bounded(H11Protocol):
    limit: ClassVar[int]
    header_timeout: ClassVar[float]
    waiting: ClassVar[dict[_Bounded, None]]
    said: ClassVar[Throttled]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.limit:
            if not self.waiting:  # every one is busy with a request: this one waits for none
                self.said(logging.WARNING, "HTTP: %d connections open (the most), refusing more", self.limit)
                self.connections.discard(self)
                transport.abort()
                return
            oldest = next(iter(self.waiting))
            self.said(logging.WARNING, "HTTP: %d connections open (the most): closing the oldest that "
                      "sent no request", self.limit)
            oldest.drop()
        self._await_headers()

    def _await_headers(self) -> None:
        self.waiting[self] = None
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_in(self) -> None:
        self.waiting.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self in self.waiting:
            log.debug("HTTP: closing a connection that sent no request headers in %.0f s",
                      self.header_timeout)
            self.drop()

    def drop(self) -> None:
        """Close this connection now (it is waiting for its request headers: nothing is cut)."""
        self._headers_in()
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self in self.waiting and self.conn.their_state is not h11.IDLE:  # a request's headers are in
            self._headers_in()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:  # kept alive for more
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_in()
        super().connection_lost(exc)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The HTTP loop's exception handler: running out of descriptors (asyncio's ``socket.accept() out
    of system resource``, once per try) is one line a minute; anything else goes to asyncio's own."""
    if out_of_fds(context.get("exception")):
        _accept_errors(logging.ERROR, "HTTP: cannot accept connections: %s", context["exception"])
    else:
        loop.default_exception_handler(context)


_accept_errors = Throttled(log)
