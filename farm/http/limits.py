"""Bounds on the HTTP server's connections: how many are open, and how long one may take to ask.

uvicorn takes every connection it is offered and waits for its request headers without a time
limit; its ``limit_concurrency`` answers 503 only once the headers are in. A local user holding
a thousand half-sent requests would so take every descriptor of the controller's process,
whose loop schedules jobs. `bounded_protocol` makes uvicorn's h11 protocol class with:

- a cap on open connections (`connection_cap`: a quarter of the process's open files limit, at
  most `MAX_CONNECTIONS`): a connection over it closes the oldest one still sending its request
  (its headers, or its body), or is itself closed at once when every open one is busy with a
  request it has sent whole;
- a time limit (`HEADER_S`) on the request headers, from the connection's start or from the end
  of its previous response: a connection that has not sent them by then is closed;
- a time limit (`BODY_S`) on the request body, from the end of its headers: a body that has not
  arrived whole by then (one sent a byte at a time) is answered 408 and the connection closed,
  as is one closed to make room.

A request sent whole (an event stream included) is never cut by any of them.
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
BODY_S = 30.0  # to send a request's body once its headers are in (MAX_BODY, 1 MiB: 35 kB/s at least)
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


def bounded_protocol(cap: int, header_s: float = HEADER_S, body_s: float = BODY_S) -> type[H11Protocol]:
    """uvicorn's h11 protocol, bounded (see the module's docs); one class per server: it holds their count."""

    class Bounded(_Bounded):
        limit = cap
        header_timeout = header_s
        body_timeout = body_s
        waiting: ClassVar[dict[_Bounded, None]] = {}  # connections still sending a request, oldest first
        said = Throttled(log)

    return Bounded


class _Bounded(H11Protocol):
    limit: ClassVar[int]
    header_timeout: ClassVar[float]
    body_timeout: ClassVar[float]
    waiting: ClassVar[dict[_Bounded, None]]
    said: ClassVar[Throttled]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._timer: asyncio.TimerHandle | None = None
        self._sending_body = False
        super().connection_made(transport)
        if len(self.connections) > self.limit:
            if not self.waiting:  # every one is busy with a request: this one waits for none
                self.said(logging.WARNING, "HTTP: %d connections open (the most), refusing more", self.limit)
                self.connections.discard(self)
                transport.abort()
                return
            oldest = next(iter(self.waiting))
            self.said(logging.WARNING, "HTTP: %d connections open (the most): closing the oldest that "
                      "has not sent its request whole", self.limit)
            oldest.drop()
        self._await_headers()

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._late)

    def _await_headers(self) -> None:
        self.waiting[self] = None
        self._sending_body = False
        self._arm(self.header_timeout)

    def _await_body(self) -> None:
        # it keeps its place among the waiting: a body sent a byte at a time is not busy, it is slow
        self.waiting[self] = None
        self._sending_body = True
        self._arm(self.body_timeout)

    def _request_in(self) -> None:
        self.waiting.pop(self, None)
        self._sending_body = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self) -> None:
        self._timer = None
        if self in self.waiting:
            body = self._sending_body
            what, limit = ("body", self.body_timeout) if body else ("headers", self.header_timeout)
            log.debug("HTTP: closing a connection that did not send its request %s in %.0f s", what, limit)
            self.drop()

    def drop(self) -> None:
        """Close this connection now (it has not sent its request whole: no request is cut). One
        sending a body is answered 408 first, if its request was not answered already."""
        if self._sending_body:
            self._answer_timeout()
        self._request_in()
        if not self.transport.is_closing():
            self.transport.abort()

    def _answer_timeout(self) -> None:
        cycle = self.cycle
        if cycle is not None:  # the app's receive() now says http.disconnect, and its send() writes nothing
            answered = cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
        else:
            answered = False
        if answered or self.conn.our_state is not h11.SEND_RESPONSE:
            return
        body = b"the request body did not arrive in time\n"
        try:
            for event in (h11.Response(status_code=408, reason=b"Request Timeout",
                                       headers=[(b"content-type", b"text/plain; charset=utf-8"),
                                                (b"content-length", str(len(body)).encode()),
                                                (b"connection", b"close")]),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # h11 would not have it: the connection closes all the same
            return
        self.transport.close()  # after the answer, which fits the socket's buffer

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._track()

    def _track(self) -> None:
        """Time what the client is sending now: a request's headers, its body, or nothing (sent whole)."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if not self._sending_body:  # its headers are in, not its body
                self._await_body()
        elif state is h11.IDLE:
            if self not in self.waiting and (self.cycle is None or self.cycle.response_complete):
                self._await_headers()  # kept alive for more, or a body finished after its answer
        elif self in self.waiting:  # sent whole
            self._request_in()

    def connection_lost(self, exc: Exception | None) -> None:
        self._request_in()
        super().connection_lost(exc)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The HTTP loop's exception handler: running out of descriptors (asyncio's ``socket.accept() out
    of system resource``, once per try) is one line a minute; anything else goes to asyncio's own."""
    if out_of_fds(context.get("exception")):
        _accept_errors(logging.ERROR, "HTTP: cannot accept connections: %s", context["exception"])
    else:
        loop.default_exception_handler(context)


_accept_errors = Throttled(log)
