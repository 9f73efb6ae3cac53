"""Loading a Mapnik XML style into a `mapnik.Map` ready to render Web Mercator tiles.

Mapnik is imported inside the functions, so the plugin loads (and says why it cannot
render) on a machine without it.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: tiles are always rendered in spherical mercator, whatever the style's own srs says
MERCATOR_SRS = "epsg:3857"
#: pixels rendered around a metatile so labels and symbols across its edges come out whole
DEFAULT_BUFFER = 128


class StyleError(ValueError):
    """Mapnik could not load a style; the message is Mapnik's own."""


def style_buffer(xml: str) -> int | None:
    """The ``buffer-size`` the style's <Map> sets, or None when it sets none."""
    try:
        value = ET.fromstring(xml).get("buffer-size")
    except ET.ParseError:
        return None  # Mapnik reports the syntax error itself, with a better message
    try:
        return max(int(float(value)), 0) if value is not None else None
    except ValueError:
        return None


def load_map(xml: str, base_path: Path, size: int = 256) -> Any:
    """A square ``size`` px `mapnik.Map` of the style, in EPSG:3857, with a buffer.

    Relative datasource paths (shapefiles) resolve against ``base_path``.
    Raises `StyleError` when Mapnik rejects the style or cannot open its data.
    """
    import mapnik

    m = mapnik.Map(size, size)
    try:
        mapnik.load_map_from_string(m, xml, False, str(base_path))
    except RuntimeError as exc:
        raise StyleError(str(exc).strip()) from None
    m.srs = MERCATOR_SRS
    buffer = style_buffer(xml)
    m.buffer_size = DEFAULT_BUFFER if buffer is None else buffer
    return m


def check_style(path: Path, base_path: Path) -> None:
    """Raise `StyleError` if Mapnik cannot load the style file (its data included)."""
    load_map(path.read_text(encoding="utf-8"), base_path)


def register_fonts() -> None:
    """Register the fonts bundled with the Mapnik wheel (idempotent; once per process is enough)."""
    import mapnik

    mapnik.register_fonts(mapnik.paths.fontscollectionpath)
