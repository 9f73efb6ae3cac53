"""``GET /api/v1/events``: the controller's event stream as Server-Sent Events.

Each event is one SSE message: ``id:`` its ``seq``, ``data:`` the event as JSON (the flat
object `farm events --json` prints). A client that reconnects sends the last id it saw as
``Last-Event-ID`` (browsers' ``EventSource`` do it by themselves) and gets every later event,
without a gap or a repeat, as long as the controller's buffer (100,000 events) still holds
them; older ones are announced as ``event: missed`` with ``{"missed": count}``. A comment
line goes out every `KEEPALIVE_S` when nothing happens, so proxies keep the connection and
a dead client is noticed.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import StreamingResponse

from farm.errors import FarmError
from farm.http.backend import Backend, backend
from farm.protocol import T

router = APIRouter(prefix="/api/v1")

RENEW_S = 10.0  # the controller drops a subscription not renewed for 30 s
MAX_STREAMS = 16  # each holds a pool thread and one of the controller's 64 subscriptions
RECONNECT_MS = 2000

_streams = threading.BoundedSemaphore(MAX_STREAMS)


@router.get("/events", summary="The event stream, as Server-Sent Events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`id: SEQ` / `data: {event JSON}` messages, forever"}})
def events(
    farm: Annotated[Backend, Depends(backend)],
    since: Annotated[int | None, Query(ge=0, description="Events after this seq (default: now).")] = None,
    last_event_id: Annotated[str | None, Header(description="Resume after this seq (wins).")] = None,
) -> StreamingResponse:
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise HTTPException(400, f"Last-Event-ID: expected an event seq (a number), "
                                     f"got {last_event_id[:40]!r}")
        since = int(last_event_id)
    if not _streams.acquire(blocking=False):
        raise HTTPException(503, f"{MAX_STREAMS} event streams are open already; try again later")
    stream = _stream(farm, since)
    weakref.finalize(stream, _streams.release)  # once the stream is gone, however it ended
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _stream(farm: Backend, since: int | None) -> Iterator[str]:
    """SSE text for every event after `since`; ends (the client reconnects) if the controller goes quiet."""
    keepalive = farm.keepalive_s
    with farm.client() as client:
        yield f"retry: {RECONNECT_MS}\n\n"
        last = since
        client.send(T.EVENTS, {"since": since})
        renewed = quiet_since = time.monotonic()
        while not farm.closing.is_set():
            now = time.monotonic()
            if now - renewed > RENEW_S:
                client.send(T.EVENTS, {"since": last})
                renewed = now
            try:
                msg = client.receive()
            except FarmError as exc:
                yield f"event: error\ndata: {json.dumps({'error': str(exc)})}\n\n"
                return
            if msg.type is not T.EVENT_BATCH:
                continue
            body = msg.body
            if body.get("missed"):
                yield f"event: missed\ndata: {json.dumps({'missed': body['missed']})}\n\n"
            if last is None and not body["events"]:
                last = body["last"]
                # sets a browser's Last-Event-ID without an event: a reconnect misses nothing
                yield f"id: {last}\n\n"
            out = []
            for event in body["events"]:
                seq = event.get("seq") if isinstance(event, dict) else None
                if isinstance(seq, int) and (last is None or seq > last):
                    last = seq
                    out.append(f"id: {seq}\ndata: {json.dumps(event, default=str)}\n\n")
            if out:
                quiet_since = time.monotonic()
                yield "".join(out)
            elif time.monotonic() - quiet_since >= keepalive:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
