"""Reading and validating a project's ``[maptiles]`` table.

Every problem is raised through the `SettingsReader`, so the error names the file,
the line and the key. The result is plain data (it travels to agents in messages).
"""

from __future__ import annotations

import math
import re
from typing import Any

from farm.settings import SettingsReader
from farm_maptiles.tilemath import MAX_LATITUDE, MAX_ZOOM, WORLD_BBOX

FORMATS = ("png", "png8")
DEFAULT_ZOOM = "0-5"
DEFAULT_TILE_SIZE = 256
DEFAULT_METATILE = 8
#: pixels around a metatile; more than this costs far more than the labels it saves
MAX_BUFFER = 2048
#: tiles one job holds at most (64 metatiles of 4x4, 16 of 8x8): its one bundle rides in one
#: result message, under ``[jobs] max_output_mib`` even at 48 KiB a tile; a fixed ``chunk`` too
MAX_JOB_TILES = 1024

_ZOOM_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_zoom(value: Any) -> tuple[int, int]:
    """``"0-5"``, ``"3"`` or ``3`` -> (min zoom, max zoom); raises ValueError saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'expected a zoom like "0-5", "3" or 3, got {value!r}')
    if isinstance(value, int):
        low = high = value
    else:
        found = _ZOOM_RANGE.match(value)
        if not found:
            raise ValueError(f'expected a zoom like "0-5", "3" or 3, got {value!r}')
        low = int(found.group(1))
        high = int(found.group(2)) if found.group(2) is not None else low
    if low > high:
        raise ValueError(f"minimum zoom {low} is above maximum zoom {high} in {value!r}")
    for z in (low, high):
        if not 0 <= z <= MAX_ZOOM:
            raise ValueError(f"zoom {z} is outside 0..{MAX_ZOOM} in {value!r}")
    return low, high


def parse_bbox(value: Any) -> list[float]:
    """[west, south, east, north] in degrees, latitudes clamped to the mercator square."""
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"expected [west, south, east, north] in degrees, got {value!r}")
    west, south, east, north = (float(v) for v in value)
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise ValueError(f"expected finite numbers, got {value!r}")
    if not (-180.0 <= west < east <= 180.0):
        raise ValueError(f"longitudes must satisfy -180 <= west < east <= 180, got west={west}, east={east}")
    if not (-90.0 <= south < north <= 90.0):
        raise ValueError(
            f"latitudes must satisfy -90 <= south < north <= 90, got south={south}, north={north}"
        )
    south = max(south, -MAX_LATITUDE)
    north = min(north, MAX_LATITUDE)
    if south >= north:
        raise ValueError(f"{value!r} lies outside Web Mercator's +-{MAX_LATITUDE:.4f} degrees of latitude")
    return [west, south, east, north]


def read_settings(s: SettingsReader) -> dict[str, Any]:
    """Validate the table (everything but whether Mapnik can load the style) and normalise it."""
    style = s.asset("style", suffixes=(".xml",))
    try:
        minzoom, maxzoom = parse_zoom(s.get("zoom", DEFAULT_ZOOM))
    except ValueError as exc:
        raise s.error("zoom", str(exc)) from None
    try:
        bbox = parse_bbox(s.get("bbox", list(WORLD_BBOX)))
    except ValueError as exc:
        raise s.error("bbox", str(exc)) from None
    tile_size = s.integer("tile_size", DEFAULT_TILE_SIZE, min=16, max=4096)
    metatile = s.integer("metatile", DEFAULT_METATILE, min=1, max=64)
    if metatile & (metatile - 1):
        raise s.error("metatile", f"must be a power of two (1, 2, 4, 8, 16, 32 or 64), got {metatile}")
    buffer = s.integer("buffer", None, min=0, max=MAX_BUFFER)
    # metatiles per job; written in farm.toml it is kept, else the controller sizes jobs from
    # measured times (farm_maptiles.grouping)
    chunk = s.integer("chunk", 1, min=1)
    most = max(1, MAX_JOB_TILES // metatile ** 2)  # a fixed chunk keeps the adaptive jobs' cap
    if chunk > most:
        raise s.error("chunk", f"{chunk} metatiles of {metatile} x {metatile} tiles make jobs of "
                               f"{chunk * metatile ** 2} tiles; a job holds at most {MAX_JOB_TILES} "
                               f"(its one result must fit [jobs] max_output_mib): chunk <= {most} "
                               f"at metatile = {metatile}")
    fmt = s.choice("format", FORMATS, "png")
    attribution = s.str("attribution", "")
    description = s.str("description", "")
    s.finish()
    return {
        "style": style,
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bbox": bbox,
        "tile_size": tile_size,
        "metatile": metatile,
        "format": fmt,
        "buffer": buffer,
        "chunk": chunk,
        "chunk_fixed": "chunk" in s.values,
        "attribution": attribution,
        "description": description,
    }


def submitted_buffer(s: SettingsReader, setting: int | None) -> int | None:
    """The buffer on a controller, which does not load the style: ``[maptiles] buffer`` if set,
    else the one the submitter's Mapnik derived (its renderer fact, checked), else None (each
    agent then uses the style's ``buffer-size``, else 128 px)."""
    facts = s.facts_reader()
    derived = facts.integer("buffer", None, min=0, max=MAX_BUFFER)
    facts.finish()
    return setting if setting is not None else derived
