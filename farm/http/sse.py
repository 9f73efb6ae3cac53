"""``GET /api/v1/events``: the controller's event stream as Server-Sent Events.

Each event is one SSE message: ``id:`` ``EPOCH:SEQ`` (the controller run's epoch, its
``seq``), ``data:`` the event as JSON (the flat object `farm events --json` prints). A client
that reconnects sends the last id it saw as ``Last-Event-ID`` (browsers' ``EventSource`` do it
by themselves) and gets every later event, without a gap or a repeat, as long as the
controller's buffer (100,000 events) still holds them; older ones are announced as ``event:
missed`` with ``{"missed": count}``. An id of a controller run gone by (it restarted, and
counts from 1 again) gets ``event: reset`` with ``{"epoch", "missed"}`` and then every
buffered event: what the client knew is stale, it should load everything again. A comment
line goes out every `KEEPALIVE_S` when nothing happens, so proxies keep the connection and
a dead client is noticed.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from farm.errors import FarmError
from farm.http.backend import Backend, backend
from farm.protocol import T

router = APIRouter(prefix="/api/v1")

RENEW_S = 10.0  # the controller drops a subscription not renewed for 30 s
MAX_STREAMS = 16  # each holds a pool thread and one of the controller's 64 subscriptions
RECONNECT_MS = 2000
REVOKED = "the API token of this stream was revoked (farm keys api-token revoke): it ends here"
MAX_SEQ = 2**63 - 1  # the largest seq a client may name (the wire's integers are 64-bit)
_ID = re.compile(r"(?:[0-9a-f]{1,32}:)?[0-9]{1,19}")  # EPOCH:SEQ (or a bare SEQ)

_streams = threading.BoundedSemaphore(MAX_STREAMS)


@router.get("/events", summary="The event stream, as Server-Sent Events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`id: SEQ` / `data: {event JSON}` messages, forever"}})
def events(
    request: Request,
    farm: Annotated[Backend, Depends(backend)],
    since: Annotated[int | None, Query(ge=0, le=MAX_SEQ,
                                       description="Events after this seq (default: now).")] = None,
    last_event_id: Annotated[str | None,
                             Header(description="Resume after this `EPOCH:SEQ` id (wins).")] = None,
) -> StreamingResponse:
    epoch = None
    if last_event_id is not None:
        epoch, since = _parse_id(last_event_id)
    if not _streams.acquire(blocking=False):
        raise HTTPException(503, f"{MAX_STREAMS} event streams are open already; try again later")
    # the token this stream was let in with, asked again as it goes on: a revoke ends it (`farm.http.guard`)
    allowed = getattr(request.state, "token_valid", None)
    return _EventStream(_stream(farm, since, epoch, allowed))


def _parse_id(value: str) -> tuple[str | None, int]:
    """(epoch, seq) of a Last-Event-ID: ``EPOCH:SEQ`` as this stream sends, or a bare ``SEQ``."""
    epoch, _, seq = value.strip().rpartition(":")
    if not _ID.fullmatch(value.strip()) or int(seq) > MAX_SEQ:
        raise HTTPException(400, f"Last-Event-ID: expected an event id ('EPOCH:SEQ', as this stream "
                                 f"sends them), got {value[:40]!r}")
    return epoch or None, int(seq)


class _EventStream(StreamingResponse):
    """Streams `_stream`'s text and, however the response ends (the client gone included), closes it
    and gives its place back at once: nothing waits for the garbage collector."""

    def __init__(self, stream: Iterator[str]) -> None:
        self._sync = stream
        self._lock = threading.Lock()  # one thread at a time runs the generator (closing it too)
        super().__init__(self._chunks(), media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def _next(self) -> str | None:
        with self._lock:
            return next(self._sync, None)

    def _close(self) -> None:
        with self._lock:  # waits for a step under way: the controller answers within IDLE_BATCH_S
            self._sync.close()

    async def _chunks(self) -> AsyncIterator[str]:
        while (chunk := await anyio.to_thread.run_sync(self._next)) is not None:
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            _streams.release()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)


def _stream(farm: Backend, since: int | None, epoch: str | None,
            allowed: Callable[[], bool] | None = None) -> Iterator[str]:
    """SSE text for every event after `since` (of controller run `epoch`); ends (the client
    reconnects) if the controller goes quiet, and with an ``error`` event once `allowed()` turns
    false (its API token was revoked: a reconnect is then refused, 401)."""
    keepalive = farm.keepalive_s
    with farm.client() as client:
        yield f"retry: {RECONNECT_MS}\n\n"
        last = since
        client.send(T.EVENTS, {"since": since, "epoch": epoch})
        renewed = quiet_since = time.monotonic()
        while not farm.closing.is_set():
            if allowed is not None and not allowed():
                yield f"event: error\ndata: {json.dumps({'error': REVOKED, 'code': 'token_revoked'})}\n\n"
                return
            now = time.monotonic()
            if now - renewed > RENEW_S:
                client.send(T.EVENTS, {"since": last, "epoch": epoch})
                renewed = now
            try:
                msg = client.receive()
            except FarmError as exc:
                yield f"event: error\ndata: {json.dumps({'error': str(exc)})}\n\n"
                return
            if msg.type is not T.EVENT_BATCH:
                continue
            body = msg.body
            epoch = body.get("epoch") or ""
            if body.get("reset"):  # the id the client resumed from is of a controller run gone by
                last = 0
                yield f"event: reset\ndata: {json.dumps({'epoch': epoch, 'missed': body['missed']})}\n\n"
            elif body.get("missed"):
                yield f"event: missed\ndata: {json.dumps({'missed': body['missed']})}\n\n"
            if last is None and not body["events"]:
                last = body["last"]
                # sets a browser's Last-Event-ID without an event: a reconnect misses nothing
                yield f"id: {_id(epoch, last)}\n\n"
            out = []
            for event in body["events"]:
                seq = event.get("seq") if isinstance(event, dict) else None
                if isinstance(seq, int) and (last is None or seq > last):
                    last = seq
                    out.append(f"id: {_id(epoch, seq)}\ndata: {json.dumps(event, default=str)}\n\n")
            if out:
                quiet_since = time.monotonic()
                yield "".join(out)
            elif time.monotonic() - quiet_since >= keepalive:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"


def _id(epoch: str, seq: int) -> str:
    return f"{epoch}:{seq}" if epoch else str(seq)
