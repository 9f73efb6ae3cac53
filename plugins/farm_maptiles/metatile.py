"""Render one metatile with Mapnik and cut it into encoded tiles.

One render of an aligned block of tiles (with the map's buffer around it) costs far
less than one render per tile, and labels across tile edges inside the block match.
PNG encoding costs more than rendering: ``png`` tiles are encoded from the metatile's raw
pixels by `pngencode` (libdeflate), ``png8`` by Mapnik's own palette encoder. A tile of one
flat colour (open ocean) is encoded once per colour and its bytes reused: the encoders are
deterministic, so the bytes are the same as encoding it again.
"""

from __future__ import annotations

from typing import Any

from farm_maptiles.pngencode import encode_scanlines, rgba_pixels, scanlines, solid_colour
from farm_maptiles.tilemath import TileRange, tile_bounds

#: Mapnik's encoder strings for each ``format`` setting (``png`` is encoded by `pngencode`;
#: ``png32`` is what Mapnik writes for it, with the same pixels)
ENCODINGS = {"png": "png32", "png8": "png8"}


def tile_name(z: int, x: int, y: int) -> str:
    """The relative output path of a tile (the same under the job's and the project's output folder)."""
    return f"tiles/{z}/{x}/{y}.png"


def render_block(m: Any, z: int, x: int, y: int, size: int, tile_size: int) -> Any:
    """Render the ``size`` x ``size`` tile block at (x, y) into a new `mapnik.Image`."""
    import mapnik

    pixels = size * tile_size
    if m.width != pixels or m.height != pixels:
        m.resize(pixels, pixels)
    m.zoom_to_box(mapnik.Box2d(*tile_bounds(z, x, y, size)))
    image = mapnik.Image(pixels, pixels)
    mapnik.render(m, image)
    return image


def render_metatile(
    m: Any,
    z: int,
    x: int,
    y: int,
    size: int,
    wanted: TileRange,
    tile_size: int,
    fmt: str,
    solid_cache: dict[tuple[Any, int, str], bytes] | None = None,
) -> list[tuple[int, int, bytes]]:
    """Render the metatile at (x, y) once and encode the ``wanted`` tiles of it: [(x, y, PNG bytes)].

    ``solid_cache`` maps (colour, tile size, encoding) to encoded bytes (the colour as RGBA bytes
    for ``png``, as Mapnik's pixel value for ``png8``); pass one that
    lives as long as the process to share it between metatiles.
    """
    image = render_block(m, z, x, y, size, tile_size)
    encoding = ENCODINGS[fmt]
    pixels = rgba_pixels(image) if fmt == "png" else None  # png: one copy of the raw pixels, cut per tile
    stride = image.width() * 4
    solid = solid_cache if solid_cache is not None else {}
    tiles = []
    # `image` stays referenced until every view is encoded: a view does not keep its parent alive.
    for tx, ty in wanted.tiles():
        left, top = (tx - x) * tile_size, (ty - y) * tile_size
        if fmt == "png":
            lines = scanlines(pixels, stride, left, top, tile_size, tile_size)
            colour = solid_colour(lines, tile_size, tile_size)
            key = (colour, tile_size, encoding) if colour is not None else None
            data = solid.get(key) if key else None
            if data is None:
                data = encode_scanlines(lines, tile_size, tile_size)
        else:
            view = image.view(left, top, tile_size, tile_size)
            key = (image.get_pixel(left, top), tile_size, encoding) if view.is_solid() else None
            data = solid.get(key) if key else None
            if data is None:
                data = view.to_string(encoding)
        if key and key not in solid:
            solid[key] = data
        tiles.append((tx, ty, data))
    del image
    return tiles
