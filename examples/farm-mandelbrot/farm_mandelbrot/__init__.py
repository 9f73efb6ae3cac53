"""The `mandelbrot` media type: an example third-party farm plugin, pure Python.

Each job renders a band of rows; the controller writes each band into place in a
preallocated raw file as it arrives (in any order, memory stays flat), then encodes
one PNG. Copy this file to start your own media type (see docs/plugins.md).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from farm.errors import RenderError
from farm.hookspecs import hookimpl
from farm.mediatype import CollateContext, Job, MediaType, RenderContext
from farm.project import Project
from farm.settings import SettingsReader

INSIDE = (0, 0, 0)  # the colour of points inside the set
PARTIAL = "mandelbrot.rgb.part"  # raw RGB rows, filled band by band on the controller
PNG_NAME = "mandelbrot.png"


def colour(n: int, max_iter: int) -> tuple[int, int, int]:
    """A smooth palette from the escape iteration (a Bernstein polynomial per channel)."""
    if n >= max_iter:
        return INSIDE
    t = n / max_iter
    return int(9 * (1 - t) * t**3 * 255), int(15 * (1 - t) ** 2 * t**2 * 255), int(8.5 * (1 - t) ** 3 * t * 255)


def render_rows(s: Mapping[str, Any], y0: int, rows: int, progress: Callable[[float], None]) -> bytes:
    """Raw RGB bytes of rows ``y0 .. y0+rows`` of the image."""
    width, height, max_iter = s["width"], s["height"], s["max_iter"]
    scale = 3.0 / (s["zoom"] * width)  # complex units per pixel
    cx, cy = s["center"]
    out = bytearray()
    for py in range(y0, y0 + rows):
        ci = cy - (py - height / 2 + 0.5) * scale  # imaginary axis points up
        for px in range(width):
            cr = cx + (px - width / 2 + 0.5) * scale
            zr = zi = 0.0
            n = 0
            while n < max_iter and zr * zr + zi * zi <= 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                n += 1
            out += bytes(colour(n, max_iter))
        progress((py - y0 + 1) / rows)
    return bytes(out)


def band_name(y0: int) -> str:
    return f"band-{y0:06d}.rgb"


class Mandelbrot(MediaType):
    name = "mandelbrot"
    description = "The Mandelbrot set as one PNG, rendered in row bands (example plugin)"
    requirements = ()  # pure Python: every agent can render it
    default_timeout = 120.0

    def configure(self, s: SettingsReader) -> dict[str, Any]:
        settings = {
            "width": s.integer("width", 96, min=1, max=16384),
            "height": s.integer("height", 64, min=1, max=16384),
            "max_iter": s.integer("max_iter", 80, min=1, max=100_000),
            "band": s.integer("band", 8, min=1),
            "zoom": s.number("zoom", 1.0),
            "center": s.get("center", [-0.5, 0.0]),
        }
        if settings["zoom"] <= 0:
            raise s.error("zoom", f"must be greater than 0, got {settings['zoom']!r}")
        center = settings["center"]
        if not (
            isinstance(center, list)
            and len(center) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in center)
            and all(math.isfinite(v) for v in center)
        ):  # a list is read with get: the reader's checks (nan, inf) are this plugin's to make
            raise s.error("center", f"expected [x, y], two finite numbers, got {center!r}")
        settings["center"] = [float(v) for v in center]
        s.finish()  # an unknown key (a typo) is an error that names it
        return settings

    def count(self, project: Project) -> int:
        s = project.settings
        return -(-s["height"] // s["band"])  # ceiling division

    def split(self, project: Project) -> Iterator[Job]:
        s = project.settings
        for y0 in range(0, s["height"], s["band"]):
            # The key depends only on the band's place, so a resumed run skips finished bands;
            # inputs=() says no job reads any project asset, so none are synced to agents.
            yield Job(f"rows-{y0:06d}", {"y0": y0, "rows": min(s["band"], s["height"] - y0)}, inputs=())

    def render(self, job: Job, ctx: RenderContext) -> Mapping[str, Any]:
        y0, rows = job.params["y0"], job.params["rows"]
        data = render_rows(ctx.settings, y0, rows, ctx.progress)
        (ctx.output_dir / band_name(y0)).write_bytes(data)
        inside = sum(data[i : i + 3] == bytes(INSIDE) for i in range(0, len(data), 3))
        return {"inside": inside}  # a small result: it reaches collate on the controller

    def collate(self, job: Job, result: Any, outputs: Mapping[str, Path], ctx: CollateContext) -> None:
        s, y0, name = ctx.project.settings, job.params["y0"], band_name(job.params["y0"])
        row_bytes = 3 * s["width"]
        staged = outputs.get(name)
        if staged is None or staged.stat().st_size != job.params["rows"] * row_bytes:
            raise RenderError(f"job {job.key} did not return a complete {name} (got {sorted(outputs)})")
        raw = ctx.output_dir / PARTIAL
        if "inside" not in ctx.state:  # first band of this run: give the image file its full size
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            with open(raw, "ab") as fh:  # "ab" keeps the bands a resumed run collated before
                fh.truncate(s["height"] * row_bytes)
            ctx.state["inside"] = 0
        with open(raw, "r+b") as fh:
            fh.seek(y0 * row_bytes)
            fh.write(staged.read_bytes())  # one band: small, whatever the image size
        ctx.state["inside"] += (result or {}).get("inside", 0)

    def finalize(self, ctx: CollateContext) -> list[Path]:
        s, raw, target = ctx.project.settings, ctx.output_dir / PARTIAL, ctx.output_dir / PNG_NAME
        if not raw.exists():
            raise RenderError("no band was collated, so there is no image to write")
        with open(raw, "rb") as fh:
            write_png(target, s["width"], s["height"], fh)
        raw.unlink()
        ctx.log.info("wrote %s, %d pixels inside the set", target, ctx.state.get("inside", 0))
        return [target]


def write_png(path: Path, width: int, height: int, raw: BinaryIO) -> None:
    """Encode RGB rows read one at a time from ``raw`` as an 8-bit PNG, atomically."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    tmp = path.with_name(path.name + ".tmp")
    packer = zlib.compressobj(9)
    with open(tmp, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        for _ in range(height):
            data = packer.compress(b"\x00" + raw.read(width * 3))  # filter type 0 per row
            if data:
                out.write(chunk(b"IDAT", data))
        out.write(chunk(b"IDAT", packer.flush()) + chunk(b"IEND", b""))
    os.replace(tmp, path)


@hookimpl
def farm_register_media_types(register: Callable[[type[MediaType]], None]) -> None:
    register(Mandelbrot)
