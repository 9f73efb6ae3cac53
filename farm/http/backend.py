"""The HTTP layer's way to the controller: a `farm.client.Client` per request, over ``inproc://``.

The HTTP thread never touches the controller's state: it asks the controller's loop, like
any other client, through the ROUTER's in-process endpoint (no keys: only code in this
process can reach it). Controller refusals become HTTP statuses here, once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from fastapi import Request
from fastapi.responses import JSONResponse

from farm.client import Client
from farm.errors import ConnectionLost, ControlError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0  # a controller this slow to answer is reported as unavailable (503)
KEEPALIVE_S = 15.0  # an idle event stream gets a comment line this often
STATUS_OF_CODE = {"not_found": 404, "bad_request": 400, "conflict": 409, "finalizing": 409,
                  "controller_disk": 503}


class Backend:
    """Makes clients of one controller (its in-process URL); `keepalive_s` paces idle event streams."""

    def __init__(self, url: str, *, timeout: float = REQUEST_TIMEOUT_S,
                 keepalive_s: float = KEEPALIVE_S) -> None:
        self.url = url
        self.timeout = timeout
        self.keepalive_s = keepalive_s
        self.closing = threading.Event()  # set on shutdown: event streams end (uvicorn waits for them)

    @contextlib.contextmanager
    def client(self, timeout: float | None = None) -> Iterator[Client]:
        with Client(self.url, timeout=self.timeout if timeout is None else timeout) as client:
            yield client


def backend(request: Request) -> Backend:
    """The app's backend (a FastAPI dependency)."""
    return request.app.state.backend


def farm_error_response(_request: Request, exc: Exception) -> JSONResponse:
    """A controller's answer as JSON: not_found 404, bad_request 400, conflict and finalizing 409, a
    controller that cannot write its own disk (controller_disk) 503,
    silence 503, and 500 for any other error (the controller could not handle the request: its log
    says why)."""
    if isinstance(exc, ControlError):
        status = STATUS_OF_CODE.get(exc.code, 400)
    elif isinstance(exc, ConnectionLost):
        status = 503
    else:
        status = 500
    message = str(exc).removeprefix("controller: ")
    return JSONResponse({"error": message}, status_code=status)


def unexpected_error_response(request: Request, exc: Exception) -> JSONResponse:
    """A bug on our side: logged with its traceback, answered 500 in JSON like every other error."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

