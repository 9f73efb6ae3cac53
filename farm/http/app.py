"""The HTTP application: `create_app` puts the API, metrics, dashboard and access rules together.

FastAPI (on Starlette, served by uvicorn) because the API's description is the code: the
route signatures and pydantic models validate each request (a bad one gets a 4xx JSON reason
naming the field) and generate the OpenAPI document at ``/api/v1/openapi.json``, so the two
cannot drift apart. See docs/api-http.md.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from farm import __version__
from farm.errors import FarmError
from farm.http import api, sse
from farm.http.backend import Backend, farm_error_response, unexpected_error_response
from farm.http.guard import Access, Guard
from farm.http.metrics import Metrics

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PREVIEW_MODULE = "farm.http.preview"  # the dashboard's preview routes, where installed


def create_app(backend: Backend, *, access: Access | None = None, metrics: Metrics | None = None,
               static_dir: Path | None = STATIC_DIR) -> FastAPI:
    """The ASGI app for one controller, reached through `backend`.

    ``access``: who may call it (default: loopback, no token); ``metrics``: the registry
    ``/metrics`` serves (its counters fed by the caller; see `farm.http.server.HttpServer`).
    Includes `farm.http.preview.router` when that module exists, and serves `static_dir`
    (the dashboard, ``farm/http/static``) at ``/`` when it holds an ``index.html``.
    """
    static = static_dir if static_dir is not None and (static_dir / "index.html").is_file() else None
    if access is None:
        access = Access(loopback=True)
    access.static_dir = static
    app = FastAPI(title="farm", version=__version__,
                  description="The render farm's HTTP API (docs/api-http.md).",
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None)
    app.state.backend = backend
    app.state.metrics = metrics if metrics is not None else Metrics()
    app.add_middleware(Guard, access=access, routes=app.router.routes)  # checks after routing
    app.add_exception_handler(FarmError, farm_error_response)
    app.add_exception_handler(Exception, unexpected_error_response)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.include_router(api.router)
    app.include_router(sse.router)
    app.add_api_route("/metrics", _metrics, methods=["GET"], response_class=Response,
                      summary="Prometheus metrics (text exposition format)")
    preview = _optional_module(PREVIEW_MODULE)
    if preview is not None:
        app.include_router(preview.router)
    if static is not None:
        files = StaticFiles(directory=static, html=True)
        app.router.routes.append(_Dashboard("/", app=files, name="dashboard"))
    return app


class _Dashboard(Mount):
    """The dashboard's files at ``/``, never for ``/api/`` or ``/metrics``: the API answers those itself,
    404 for a route it does not have and 405 for a method a route does not take."""

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        path = scope.get("path", "")
        if path.startswith("/api/") or path == "/metrics":
            return Match.NONE, {}
        return super().matches(scope)


def _metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise  # the module is there but something it imports is not: a real error
        return None


def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    """422 ``{"error": "body.priority: ...", "detail": [...]}``: every problem, each naming its field;
    400 ``{"error": "body: not valid JSON (...)"}`` for a body that does not parse."""
    assert isinstance(exc, RequestValidationError)
    for error in exc.errors():  # a body that is no JSON at all is a malformed request, not a bad field
        if error.get("type") == "json_invalid":
            why = (error.get("ctx") or {}).get("error") or error.get("msg", "")
            at = error.get("loc", ())[1:2]
            where = f" at character {at[0]}" if at else ""
            return JSONResponse({"error": f"body: not valid JSON ({why}{where})"}, status_code=400)
    problems = []
    detail = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        where = ".".join(loc) or "request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
        detail.append({"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))})
    return JSONResponse({"error": "; ".join(problems), "detail": detail}, status_code=422)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error = str(exc.detail)
    if exc.status_code == 404 and error == "Not Found":
        error = f"Not Found: no route {request.url.path[:200]!r} (docs/api-http.md lists them)"
    elif exc.status_code == 405:
        path = request.url.path
        allowed = [method for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
                   if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                          for route in request.app.router.routes if not isinstance(route, Mount))]
        error = (f"Method Not Allowed: {path[:200]!r} takes {', '.join(allowed) or 'other methods'}, "
                 f"not {request.method}")
    return JSONResponse({"error": error}, status_code=exc.status_code, headers=exc.headers)
