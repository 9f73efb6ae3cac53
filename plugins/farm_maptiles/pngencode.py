"""32-bit PNG tiles cut from a rendered metatile, compressed with libdeflate.

Encoding costs more than rendering a tile: Mapnik's own ``png32`` encoder (libpng and the
zlib bundled in the ``mapnik`` wheel) takes about 4-6 ms per 256 px full-colour tile here.
It writes RGBA rows with no PNG filter at zlib level 6; this module writes the same
structure (IHDR colour type 6, 8 bits, filter type 0 on every row, one IDAT, IEND) from
the metatile's raw pixels and compresses it with libdeflate (the ``deflate`` package) at
level 1: about 0.4 ms per tile, the same pixels, and within about 2 % of Mapnik's size.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import deflate

#: libdeflate level: 1 was the fastest and within 2 % of Mapnik's size on world_map (docs/benchmarks.md)
LEVEL = 1
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_ROW_FILTER_NONE = b"\x00"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def rgba_pixels(image: Any) -> bytes:
    """The raw, non-premultiplied RGBA bytes of a `mapnik.Image` (rows top to bottom, 4 bytes a pixel)."""
    if image.premultiplied():  # PNG stores straight alpha; Mapnik's encoder demultiplies too
        image.demultiply()
    return image.to_string()


def scanlines(pixels: bytes | memoryview, stride: int, left: int, top: int, width: int, height: int) -> bytes:
    """The PNG scanlines (filter byte 0, then RGBA) of the ``width`` x ``height`` block at (``left``, ``top``).

    ``pixels`` holds rows of ``stride`` bytes (4 bytes a pixel, RGBA, straight alpha).
    Raises ValueError when the block does not lie inside the buffer.
    """
    if left < 0 or top < 0 or width <= 0 or height <= 0 or (left + width) * 4 > stride:
        raise ValueError(f"block {width}x{height} at ({left}, {top}) is outside rows of {stride // 4} pixels")
    if (top + height) * stride > len(pixels):
        raise ValueError(f"block {width}x{height} at ({left}, {top}) is below the last row of the buffer")
    view = memoryview(pixels)
    start, row_bytes = top * stride + left * 4, width * 4
    rows = [view[at:at + row_bytes] for at in range(start, start + height * stride, stride)]
    return _ROW_FILTER_NONE.join([b"", *rows])  # a filter byte before each row


def solid_colour(lines: bytes, width: int, height: int) -> bytes | None:
    """The RGBA bytes of the one colour of a block's `scanlines`, or None when it has more than one.

    One comparison of the whole block (memcmp speed), cheaper than Mapnik's per-pixel `is_solid`.
    """
    first = lines[1:5]
    return first if lines == (_ROW_FILTER_NONE + first * width) * height else None


def encode_scanlines(lines: bytes, width: int, height: int) -> bytes:
    """A PNG (8-bit RGBA, no interlace) of a block's `scanlines`."""
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    idat = deflate.zlib_compress(lines, LEVEL)
    return b"".join((_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", idat), _IEND))


def encode_png(pixels: bytes | memoryview, stride: int, left: int, top: int, width: int, height: int) -> bytes:
    """A PNG of the ``width`` x ``height`` pixel block at (``left``, ``top``) of an RGBA buffer
    (see `scanlines` for the layout and errors)."""
    return encode_scanlines(scanlines(pixels, stride, left, top, width, height), width, height)
