"""The dashboard's live previews over HTTP: each run's `MediaType.preview`, its tiles and its images.

Routes (included by `farm.http.app`):

- ``GET /api/v1/projects/{project}/preview``: the media type's description (`farm.preview`), or
  ``{"kind": "none"}``; a preview that raises or returns something unusable is logged and
  answered as ``{"kind": "message", "text": ...}``. A run that finished before this controller
  started is previewed from its output folder, or answered with a ``message`` once that is gone.
- ``GET /api/v1/projects/{project}/tiles/{z}/{x}/{y}.png``: one tile of a ``tiles`` preview, from
  its file, else its MBTiles file; ``204 No Content`` while it is not rendered yet (the page
  asks again as jobs finish).
- ``GET /api/v1/projects/{project}/files/{name}``: an image that the run's current description
  names (and nothing else), opened under the output folder with no symlink on the way.

Previews run in the server's worker threads, never in the controller's loop, one at a time
per run, from the run's immutable facts (`Controller.run_facts`). ``/preview`` makes the
description afresh; tile and file requests reuse it for `FRESH_S`, so a map's dozens of tile
requests cost one call.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from farm.http.api import ProjectId
from farm.http.backend import backend
from farm.ids import BadIdentifier, check_key
from farm.paths import UnsafePath, resolve_inside
from farm.preview import (
    IMAGE_TYPES,
    MAX_ZOOM,
    BadPreview,
    PreviewContext,
    RunFacts,
    check_description,
    context_for,
    tile_path,
)

log = logging.getLogger(__name__)

FRESH_S = 1.0  # a description is reused this long
MAX_TILE_BYTES = 16 << 20
STREAM_CHUNK = 256 << 10
KEEP_RUNS = 64  # runs whose preview state the server remembers
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

router = APIRouter(tags=["previews"])


@dataclass
class _RunPreview:
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache: dict[str, Any] = field(default_factory=dict)
    description: dict[str, Any] | None = None
    at: float = -1e9


class Previews:
    """Per-run preview state: a lock, the media type's cache, the last description."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, _RunPreview] = {}

    def _state(self, run_id: str) -> _RunPreview:
        with self._lock:
            state = self._runs.pop(run_id, None) or _RunPreview()
            self._runs[run_id] = state  # most recently used last
            while len(self._runs) > KEEP_RUNS:
                del self._runs[next(iter(self._runs))]
            return state

    def describe(self, facts: RunFacts, max_age: float = FRESH_S) -> dict[str, Any]:
        """The run's checked description, at most ``max_age`` seconds old."""
        state = self._state(facts.run_id)
        with state.lock:
            if state.description is not None and time.monotonic() - state.at < max_age:
                return state.description
            state.description = _call(facts, context_for(facts, state.cache))
            state.at = time.monotonic()
            return state.description


def _call(facts: RunFacts, ctx: PreviewContext) -> dict[str, Any]:
    try:
        value = facts.media.preview(ctx)
        return {"kind": "none"} if value is None else check_description(value)
    except BadPreview as exc:
        log.warning("%s: media type %s gave an unusable preview: %s", facts.run_id, facts.media.name, exc)
        return {"kind": "message", "text": f"no preview: the {facts.media.name} preview is unusable ({exc})"}
    except Exception as exc:  # a plugin's bug must not become a 500 for the page
        log.warning("%s: the %s preview failed: %r", facts.run_id, facts.media.name, exc, exc_info=True)
        return {"kind": "message", "text": f"no preview: the {facts.media.name} preview failed "
                                           f"({type(exc).__name__})"}


def _previews(request: Request) -> Previews:
    state = request.app.state
    previews = getattr(state, "previews", None)
    if previews is None:  # first use; a race makes two and keeps one, harmlessly
        previews = state.previews = Previews()
    return previews


def _facts(request: Request, ref: str) -> tuple[str, RunFacts | None]:
    """(the run's id, its facts); facts None for a run that exists but whose preview is not kept
    (it finished before this controller started and its output folder is gone). 404 for no run."""
    lookup = getattr(request.app.state, "run_facts", None)  # Controller.run_facts, set by farm.http.server
    if lookup is None:
        raise HTTPException(404, f"no project or run {ref!r}")
    facts = lookup(ref)
    if facts is not None:
        return facts.run_id, facts
    # not in memory: a run that finished before this start? Asking the controller (in its loop)
    # finds it in the journal, and makes its record known to `run_facts`; no such run: 404
    with backend(request).client() as client:
        run_id = str(client.project(ref)["id"])
    return run_id, lookup(run_id)


def _not_kept(run_id: str) -> str:
    return (f"no preview: project run {run_id!r} finished before this controller started, "
            "and its output folder is not there any more")


@router.get("/api/v1/projects/{project}/preview")
def get_preview(request: Request, project: ProjectId) -> dict[str, Any]:
    """The run's live preview description (see `farm.preview` for the kinds); for a run that
    finished before this controller started, from its output folder while that is still there."""
    run_id, facts = _facts(request, project)
    if facts is None:
        return {"kind": "message", "text": _not_kept(run_id)}
    # always made afresh (the page asks at most once a second, after an event): a reused one could
    # predate the run's last change, and nothing would come to replace it
    return _previews(request).describe(facts, max_age=0.0)


@router.get("/api/v1/projects/{project}/tiles/{z}/{x}/{y}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 204: {"description": "not rendered yet"}})
def get_tile(request: Request, project: ProjectId, z: int = PathParam(ge=0, le=MAX_ZOOM),
             x: int = PathParam(ge=0), y: int = PathParam(ge=0)) -> Response:
    """One XYZ tile of a ``tiles`` preview; 204 while it is not rendered yet."""
    if x >= 1 << z or y >= 1 << z:
        raise HTTPException(404, f"tile {z}/{x}/{y} is outside zoom {z}")
    run_id, facts = _facts(request, project)
    if facts is None:
        raise HTTPException(404, f"no tile {z}/{x}/{y}: {_not_kept(run_id)}")
    description = _previews(request).describe(facts)
    if description.get("kind") != "tiles":
        raise HTTPException(404, f"no tile {z}/{x}/{y}: project run {run_id!r} has no tiles preview")
    ctx = context_for(facts, {})
    data = _tile_file(ctx, tile_path(description, z, x, y))
    if data is None and description.get("mbtiles"):
        data = _tile_mbtiles(facts.output_dir, description["mbtiles"], z, x, y)
    if data is None:
        return Response(status_code=204, headers=NO_STORE)
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache",
                                                           "X-Content-Type-Options": "nosniff"})


def _tile_file(ctx: PreviewContext, rel: str) -> bytes | None:
    try:
        f = ctx.open(check_key(rel, "tile path"))
    except (BadIdentifier, UnsafePath, OSError) as exc:
        log.warning("%s: tile %s refused: %s", ctx.run_id, rel, exc)
        return None
    if f is None:
        return None
    with f:
        data = f.read(MAX_TILE_BYTES + 1)
    return data if 0 < len(data) <= MAX_TILE_BYTES else None


def _tile_mbtiles(output_dir: Path, name: str, z: int, x: int, y: int) -> bytes | None:
    """The tile from an MBTiles file in the output folder (rows are TMS: flipped), read-only."""
    try:
        path = resolve_inside(output_dir, name)  # a checked name; a symlink leading out is refused
        if not path.is_file():
            return None
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=1.0)
        try:
            row = db.execute("SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? "
                             "AND tile_row=?", (z, x, (1 << z) - 1 - y)).fetchone()
        finally:
            db.close()
    except (UnsafePath, OSError, sqlite3.Error) as exc:
        log.debug("no tile %d/%d/%d from %s: %s", z, x, y, name, exc)
        return None
    return bytes(row[0]) if row and row[0] and len(row[0]) <= MAX_TILE_BYTES else None


@router.get("/api/v1/projects/{project}/files/{name:path}", response_class=Response,
            responses={200: {"content": {t: {} for t in sorted(set(IMAGE_TYPES.values()))}}})
def get_file(request: Request, project: ProjectId, name: str = PathParam()) -> Response:
    """An image the run's current preview names (``files`` or ``poster``)."""
    run_id, facts = _facts(request, project)
    try:
        check_key(name, "file name")
    except BadIdentifier as exc:
        raise HTTPException(400, str(exc)) from None
    if facts is None:
        raise HTTPException(404, f"{name!r}: {_not_kept(run_id)}")
    description = _previews(request).describe(facts)
    if name not in (*description.get("files", ()), description.get("poster")):
        raise HTTPException(404, f"{name!r} is not in the preview of project run {facts.run_id!r}")
    try:
        f = context_for(facts, {}).open(name)
    except (UnsafePath, OSError) as exc:
        log.warning("%s: preview file %s refused: %s", facts.run_id, name, exc)
        raise HTTPException(404, f"{name!r} cannot be read") from None
    if f is None:
        raise HTTPException(404, f"{name!r} is gone")
    return StreamingResponse(_chunks(f), media_type=IMAGE_TYPES[Path(name).suffix.lower()],
                             headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    with f:
        while chunk := f.read(STREAM_CHUNK):
            yield chunk
