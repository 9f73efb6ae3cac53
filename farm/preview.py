"""Live previews: what a media type shows of a run's output while it renders.

The dashboard (``farm/http/static/``) asks each run's media type for a preview through
`farm.mediatype.MediaType.preview`, which returns a small JSON description of one of the
kinds the page knows how to draw:

``{"kind": "tiles", "path": "tiles/{z}/{x}/{y}.png", "bounds": [w, s, e, n], "minzoom": 0, "maxzoom": 5}``
    an XYZ slippy map (Web Mercator); optional ``"tile_size"`` (pixels, 256),
    ``"mbtiles"`` (an MBTiles file in the output folder, read when a tile file is missing)
    and ``"attribution"``. The tile files are served at ``.../tiles/{z}/{x}/{y}.png``.
``{"kind": "images", "files": ["frames/frame_000012.png", ...], "count": 12}``
    a filmstrip of images (PNG, JPEG, WebP, GIF), oldest first, at most `MAX_FILES`;
    optional ``"note"`` (a line of text) and ``"poster"`` (one more image, e.g. a contact sheet).
``{"kind": "waveform", "peaks": [[-0.5, 0.6], null, ...], "seconds": 180.0, "joined_s": 40.0}``
    at most `MAX_PEAKS` (min, max) pairs in -1..1 spread evenly over ``seconds``; null where
    no audio has arrived yet.
``{"kind": "message", "text": "..."}``
    a line of text, for output the browser cannot show.

Every name in a description is a path relative to the run's output folder; the server only
serves files a description names, opened with no symlink on the way (`farm.safeopen`).
Previews run in the HTTP server's worker threads, never in the controller's loop; they may
read only the run's immutable facts (`PreviewContext`) and files under its output folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from farm.ids import BadIdentifier, check_key, check_name
from farm.paths import UnsafePath
from farm.safeopen import open_beneath, open_dir

if TYPE_CHECKING:
    from farm.mediatype import MediaType

log = logging.getLogger(__name__)

KINDS = ("tiles", "images", "waveform", "message")
MAX_FILES = 32
MAX_PEAKS = 2000
MAX_TEXT = 2000
MAX_ZOOM = 30
#: what an image a description names may be: suffix -> the Content-Type it is served with
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif"}


class BadPreview(ValueError):
    """A media type's preview description that the dashboard cannot use (says what is wrong)."""


@dataclass(frozen=True)
class RunFacts:
    """What never changes during a run: safe to read from any thread (`Controller.run_facts`)."""

    run_id: str
    project: str  # the project's name
    media: MediaType
    settings: Mapping[str, Any]  # the media type's normalised settings (a read-only copy)
    output_dir: Path
    submitted: float  # epoch seconds: files older than this are an earlier run's


@dataclass
class PreviewContext:
    """What `MediaType.preview` gets: a run's immutable facts and a scratch dict of its own.

    Calls for one run never overlap, so ``cache`` needs no lock; it lives as long as the
    server remembers the run (keep it small: a few kB, not the output).
    """

    run_id: str
    project: str
    settings: Mapping[str, Any]
    output_dir: Path
    submitted: float = 0.0  # epoch seconds: files modified before it are an earlier run's
    cache: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = logging.getLogger("farm.preview")

    def open(self, rel: str) -> IO[bytes] | None:
        """The file ``rel`` (a relative path under the output folder) opened for reading, or None
        if it (or the folder) does not exist. A symlink on the way or a path leading out raises
        `farm.paths.UnsafePath`."""
        try:
            root = open_dir(os.path.realpath(self.output_dir))
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fd = open_beneath(root, rel, os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return None
        finally:
            os.close(root)
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device would block or never end
            os.close(fd)
            raise UnsafePath(f"{rel} is not a regular file")
        return os.fdopen(fd, "rb")

    def files(self, rel: str = "") -> Iterator[os.DirEntry[str]]:
        """The regular files (not symlinks) directly in the folder ``rel`` of the output folder;
        nothing if it does not exist; `farm.paths.UnsafePath` if ``rel`` leads out or through a symlink."""
        try:
            root = open_dir(os.path.realpath(self.output_dir))
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            folder = open_beneath(root, rel, os.O_RDONLY | os.O_DIRECTORY) if rel else os.dup(root)
        except (FileNotFoundError, NotADirectoryError):
            return
        finally:
            os.close(root)
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        yield entry
        finally:
            os.close(folder)


def context_for(facts: RunFacts, cache: dict[str, Any]) -> PreviewContext:
    return PreviewContext(facts.run_id, facts.project, facts.settings, facts.output_dir, facts.submitted,
                          cache, logging.getLogger(f"farm.preview.{facts.media.name}"))


def check_description(value: Any) -> dict[str, Any]:
    """A media type's preview description checked where it enters the server; raises `BadPreview`."""
    if not isinstance(value, Mapping):
        raise BadPreview(f"expected a dict, got {type(value).__name__}")
    kind = value.get("kind")
    if kind not in KINDS:
        raise BadPreview(f"'kind' is {kind!r}; expected one of {', '.join(KINDS)}")
    out = dict(value)
    if kind == "tiles":
        _tiles(out)
    elif kind == "images":
        files = out.get("files", [])
        if not isinstance(files, list) or len(files) > MAX_FILES:
            raise BadPreview(f"'files' must be a list of at most {MAX_FILES} names")
        out["files"] = [image_name(name) for name in files]
        if out.get("poster") is not None:
            out["poster"] = image_name(out["poster"])
    elif kind == "waveform":
        peaks = out.get("peaks")
        if not isinstance(peaks, list) or len(peaks) > MAX_PEAKS:
            raise BadPreview(f"'peaks' must be a list of at most {MAX_PEAKS} [min, max] pairs")
        for peak in peaks:
            if peak is not None and not (isinstance(peak, list | tuple) and len(peak) == 2
                                         and all(_finite(v) and -1.0 <= v <= 1.0 for v in peak)):
                raise BadPreview(f"a peak must be null or [min, max] in -1..1, got {peak!r}"[:200])
        for key in ("seconds", "joined_s"):
            if not _finite(out.get(key, 0.0)):
                raise BadPreview(f"{key!r} must be a number")
    for key in ("text", "note"):
        if key in out and not (isinstance(out[key], str) and len(out[key]) <= MAX_TEXT):
            raise BadPreview(f"{key!r} must be a string of at most {MAX_TEXT} characters")
    return out


def image_name(name: Any) -> str:
    """``name`` if it is a safe relative path (`farm.ids.check_key`) with an image suffix."""
    try:
        check_key(name, "preview file")
    except BadIdentifier as exc:
        raise BadPreview(str(exc)) from None
    if Path(name).suffix.lower() not in IMAGE_TYPES:
        raise BadPreview(f"preview file {name!r} is not one of {', '.join(IMAGE_TYPES)}")
    return name


def tile_path(description: Mapping[str, Any], z: int, x: int, y: int) -> str:
    """The relative path of one tile from a checked ``tiles`` description."""
    return str(description["path"]).format(z=z, x=x, y=y)


def _tiles(out: dict[str, Any]) -> None:
    path = out.get("path")
    if not isinstance(path, str) or any(part not in path for part in ("{z}", "{x}", "{y}")):
        raise BadPreview("'path' must be a relative path with {z}, {x} and {y}, like 'tiles/{z}/{x}/{y}.png'")
    try:
        check_key(path.format(z=0, x=0, y=0), "tile path")
    except (BadIdentifier, KeyError, IndexError, ValueError) as exc:
        raise BadPreview(f"'path' {path!r}: {exc}") from None
    bounds = out.get("bounds")
    if not (isinstance(bounds, list | tuple) and len(bounds) == 4 and all(_finite(v) for v in bounds)):
        raise BadPreview("'bounds' must be [west, south, east, north] in degrees")
    out["bounds"] = [float(v) for v in bounds]
    for key, default in (("minzoom", 0), ("maxzoom", None), ("tile_size", 256)):
        value = out.get(key, default)
        if type(value) is not int or not 0 <= value <= (4096 if key == "tile_size" else MAX_ZOOM):
            raise BadPreview(f"{key!r} must be a whole number, got {value!r}")
        out[key] = value
    if out["minzoom"] > out["maxzoom"]:
        raise BadPreview("'minzoom' is above 'maxzoom'")
    if out.get("mbtiles") is not None:
        try:
            check_name(out["mbtiles"], "MBTiles file")
        except BadIdentifier as exc:
            raise BadPreview(str(exc)) from None
    attribution = out.get("attribution", "")
    if not (isinstance(attribution, str) and len(attribution) <= MAX_TEXT):
        raise BadPreview("'attribution' must be a short string")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@contextlib.contextmanager
def opened(ctx: PreviewContext, rel: str) -> Iterator[IO[bytes] | None]:
    """`PreviewContext.open` as a context manager (None if missing)."""
    f = ctx.open(rel)
    try:
        yield f
    finally:
        if f is not None:
            f.close()
