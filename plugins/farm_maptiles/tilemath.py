"""Web Mercator (EPSG:3857) tile arithmetic for XYZ tiles and aligned metatiles.

Pure Python, no Mapnik: the controller splits a project with it, and tests check it
on its own. Tiles are addressed XYZ (y = 0 at the north edge, as in slippy maps);
MBTiles wants TMS rows, see `tms_row`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

#: half the width of the Web Mercator square, in metres (pi * WGS84 semi-major axis)
HALF_WORLD = math.pi * 6378137.0
#: the latitude where the Web Mercator square ends (atan(sinh(pi)))
MAX_LATITUDE = math.degrees(math.atan(math.sinh(math.pi)))
MAX_ZOOM = 22
WORLD_BBOX = (-180.0, -MAX_LATITUDE, 180.0, MAX_LATITUDE)

#: [west, south, east, north] in degrees
BBox = tuple[float, float, float, float] | list[float]


@dataclass(frozen=True)
class TileRange:
    """Inclusive XYZ tile ranges at one zoom: columns x0..x1, rows y0..y1."""

    z: int
    x0: int
    y0: int
    x1: int
    y1: int

    def __len__(self) -> int:
        return (self.x1 - self.x0 + 1) * (self.y1 - self.y0 + 1)

    def tiles(self) -> Iterator[tuple[int, int]]:
        for x in range(self.x0, self.x1 + 1):
            for y in range(self.y0, self.y1 + 1):
                yield x, y


@dataclass(frozen=True)
class Metatile:
    """An aligned block of ``size`` x ``size`` tiles whose north-west tile is (x, y),
    and the tiles of it that are wanted (those inside the project's bbox)."""

    z: int
    x: int
    y: int
    size: int
    wanted: TileRange

    @property
    def key(self) -> str:
        return f"{self.z}/{self.x}/{self.y}"


def tms_row(z: int, y: int) -> int:
    """The MBTiles (TMS) row of XYZ row ``y``: TMS counts rows from the south."""
    return (1 << z) - 1 - y


def lonlat_to_fraction(lon: float, lat: float, z: int) -> tuple[float, float]:
    """Fractional XYZ tile coordinates of a point (lat clamped to the mercator square)."""
    lat = max(-MAX_LATITUDE, min(MAX_LATITUDE, lat))
    n = 1 << z
    fx = (lon + 180.0) / 360.0 * n
    rad = math.radians(lat)
    fy = (1.0 - math.asinh(math.tan(rad)) / math.pi) / 2.0 * n
    return fx, fy


def tile_range(bbox: BBox, z: int) -> TileRange:
    """The tiles at zoom ``z`` that overlap a lon/lat bbox [west, south, east, north].

    A bbox edge lying exactly on a tile border does not pull in the tile beyond it;
    a degenerate (zero-width) bbox still yields the one tile it lies in.
    """
    west, south, east, north = bbox
    last = (1 << z) - 1
    fx0, fy0 = lonlat_to_fraction(west, north, z)
    fx1, fy1 = lonlat_to_fraction(east, south, z)
    x0 = min(max(math.floor(fx0), 0), last)
    y0 = min(max(math.floor(fy0), 0), last)
    x1 = min(max(math.ceil(fx1) - 1, x0), last)
    y1 = min(max(math.ceil(fy1) - 1, y0), last)
    return TileRange(z, x0, y0, x1, y1)


def metatile_size(metatile: int, z: int) -> int:
    """Tiles per metatile side at zoom ``z``: the whole world is smaller than 8x8 below z3."""
    return min(metatile, 1 << z)


def metatiles(bbox: BBox, z: int, metatile: int) -> Iterator[Metatile]:
    """The aligned metatiles at zoom ``z`` that hold at least one tile of the bbox, in row-major order."""
    size = metatile_size(metatile, z)
    wanted = tile_range(bbox, z)
    mask = ~(size - 1)
    for my in range(wanted.y0 & mask, wanted.y1 + 1, size):
        for mx in range(wanted.x0 & mask, wanted.x1 + 1, size):
            cut = TileRange(
                z,
                max(mx, wanted.x0),
                max(my, wanted.y0),
                min(mx + size - 1, wanted.x1),
                min(my + size - 1, wanted.y1),
            )
            yield Metatile(z, mx, my, size, cut)


def metatile_grid(bbox: BBox, z: int, metatile: int) -> tuple[int, int]:
    """(columns, rows) of the metatiles `metatiles` yields, without listing them."""
    size = metatile_size(metatile, z)
    wanted = tile_range(bbox, z)
    mask = ~(size - 1)
    columns = (wanted.x1 & mask) // size - (wanted.x0 & mask) // size + 1
    rows = (wanted.y1 & mask) // size - (wanted.y0 & mask) // size + 1
    return columns, rows


def metatile_count(bbox: BBox, z: int, metatile: int) -> int:
    """How many metatiles `metatiles` yields, without listing them."""
    columns, rows = metatile_grid(bbox, z, metatile)
    return columns * rows


def tile_bounds(z: int, x: int, y: int, size: int = 1) -> tuple[float, float, float, float]:
    """Mercator bounds (minx, miny, maxx, maxy) in metres of the ``size`` x ``size`` block at (x, y)."""
    span = 2.0 * HALF_WORLD / (1 << z)
    minx = -HALF_WORLD + x * span
    maxy = HALF_WORLD - y * span
    return minx, maxy - size * span, minx + size * span, maxy
