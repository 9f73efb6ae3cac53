"""Cheap checks that a rendered frame is a whole image, without decoding it.

Blender can exit 0 after writing nothing, or die half way through a file, so every
frame is checked: PNG by signature, IHDR and a closing IEND chunk; OpenEXR by its
magic number and version field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
EXR_MAGIC = b"\x76\x2f\x31\x01"

#: the formats a project can ask for: setting name -> (Blender's -F name, file suffix)
FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", ".png"),
    "exr": ("OPEN_EXR", ".exr"),
}


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


class BadImage(ValueError):
    """A frame file that is missing, empty, truncated or of the wrong kind."""


def check_image(path: Path, fmt: str) -> ImageInfo:
    """Return the image's header facts, or raise `BadImage` saying what is wrong."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadImage(f"{path.name} was not written") from None
    if size == 0:
        raise BadImage(f"{path.name} is empty")
    if fmt == "png":
        return _check_png(path, size)
    if fmt == "exr":
        return _check_exr(path)
    raise ValueError(f"unknown image format {fmt!r}")


def _check_png(path: Path, size: int) -> ImageInfo:
    with path.open("rb") as f:
        head = f.read(33)
        f.seek(max(0, size - len(PNG_IEND)))
        tail = f.read()
    if head[:8] != PNG_SIGNATURE:
        raise BadImage(f"{path.name} is not a PNG (bad signature)")
    if len(head) < 33:
        raise BadImage(f"{path.name} is truncated ({size} bytes)")
    length, kind = struct.unpack(">I4s", head[8:16])
    if kind != b"IHDR" or length != 13:
        raise BadImage(f"{path.name} is not a valid PNG (no IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    if width == 0 or height == 0:
        raise BadImage(f"{path.name} has an empty size {width}x{height}")
    if tail != PNG_IEND:
        raise BadImage(f"{path.name} is truncated (no IEND chunk at the end)")
    return ImageInfo("png", width, height)


def _check_exr(path: Path) -> ImageInfo:
    with path.open("rb") as f:
        head = f.read(64 * 1024)  # headers are a few hundred bytes
    if head[:4] != EXR_MAGIC or len(head) < 8:
        raise BadImage(f"{path.name} is not an OpenEXR file (bad magic number)")
    if head[4] != 2:
        raise BadImage(f"{path.name} has an unsupported OpenEXR version {head[4]}")
    box = _exr_attribute(head, b"dataWindow")
    if box is None or len(box) != 16:
        raise BadImage(f"{path.name} is not a valid OpenEXR file (no dataWindow in its header)")
    xmin, ymin, xmax, ymax = struct.unpack("<iiii", box)
    return ImageInfo("exr", xmax - xmin + 1, ymax - ymin + 1)


def _exr_attribute(head: bytes, wanted: bytes) -> bytes | None:
    """The raw value of one attribute of a single-part EXR header (name, type, size, value)."""
    pos = 8
    while pos < len(head) and head[pos] != 0:
        name_end = head.find(b"\0", pos)
        type_end = head.find(b"\0", name_end + 1)
        if name_end < 0 or type_end < 0 or type_end + 5 > len(head):
            return None
        (size,) = struct.unpack("<i", head[type_end + 1 : type_end + 5])
        value = head[type_end + 5 : type_end + 5 + size]
        if head[pos:name_end] == wanted:
            return value
        pos = type_end + 5 + size
    return None
