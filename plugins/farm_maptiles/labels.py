"""How wide a style's labels can be, from its text symbolizers and its data: the buffer it needs.

A metatile is rendered with a buffer of pixels around it; a label whose anchor lies outside
metatile plus buffer is not placed in that metatile, so a label wider than twice the buffer
is cut where two metatiles meet. A buffer of half the widest label (plus halo and offset)
places every label the neighbouring metatile would place. Text width is estimated, not
measured: `EM_WIDTH` of the font size per character is wider than DejaVu Sans's average
advance, so the estimate errs on the side of a larger buffer (slower, never cut).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from farm_maptiles.stylexml import Element

log = logging.getLogger(__name__)

#: estimated advance of one character, in font sizes (DejaVu Sans averages about 0.55-0.6)
EM_WIDTH = 0.7
#: features read per layer to find the longest label; a sample of larger data
MAX_FEATURES = 50_000
_FIELD = re.compile(r"\[([^\]]+)\]")
_TEXT_SYMBOLIZERS = ("TextSymbolizer", "ShieldSymbolizer")


def _number(node: Element, name: str, default: float) -> float:
    try:
        value = float(node.attrib.get(name, default))
    except ValueError:  # an expression; the default is a guess, the setting overrides it
        return default
    return value if math.isfinite(value) else default


@dataclass(frozen=True)
class Label:
    """One text symbolizer: its text expression, font size and wrap width (px), and the pixels
    its halo, margin and horizontal offset add on each side."""

    text: str
    size: float
    wrap: float
    extra: float


def _label_texts(map_node: Element) -> dict[str, list[Label]]:
    """Style name -> the labels its text and shield symbolizers draw."""
    found: dict[str, list[Label]] = {}
    for style in map_node.iter("Style"):
        for tag in _TEXT_SYMBOLIZERS:
            for node in style.iter(tag):
                size = _number(node, "size", 10.0)
                extra = (abs(_number(node, "dx", 0.0)) + _number(node, "halo-radius", 0.0)
                         + _number(node, "margin", 0.0))
                text = node.all_text().strip() or node.attrib.get("name", "")
                label = Label(text, size, _number(node, "wrap-width", 0.0), extra)
                found.setdefault(style.attrib.get("name", ""), []).append(label)
    return found


def _longest(datasource: Any, expression: str) -> tuple[int, int]:
    """Characters in the longest value of ``expression`` over the datasource's features, and in
    the longest word of any value (a wrapped label is at least that wide)."""
    import mapnik

    try:
        compiled = mapnik.Expression(expression)
    except RuntimeError:
        compiled = None
    query = mapnik.Query(datasource.envelope())
    for field in _FIELD.findall(expression):
        query.add_property_name(field)
    longest = word = 0
    for number, feature in enumerate(datasource.features(query)):
        if number >= MAX_FEATURES:
            break
        if compiled is not None:
            value = compiled.evaluate(feature)
        else:
            value = "".join(str(feature[f]) for f in _FIELD.findall(expression) if f in feature)
        text = str(value)
        longest = max(longest, len(text))
        word = max(word, *(len(w) for w in text.split()), 0)
    return longest, word


def widest_label(map_node: Element, m: Any) -> int:
    """Estimated pixels of the widest label the style can draw (0 when it draws none)."""
    texts = _label_texts(map_node)
    widest = 0.0
    for layer in m.layers:
        styles = [texts[name] for name in layer.styles if name in texts]
        if not styles or layer.datasource is None:
            continue
        for label in (item for group in styles for item in group):
            try:
                chars, word = _longest(layer.datasource, label.text)
            except RuntimeError as exc:  # data Mapnik cannot read now fails the render anyway
                log.debug("could not read the labels of layer %s: %s", layer.name, exc)
                continue
            width = chars * label.size * EM_WIDTH
            if label.wrap > 0:
                width = min(width, max(label.wrap, word * label.size * EM_WIDTH))
            widest = max(widest, width + 2 * label.extra)
    return math.ceil(widest)


def buffer_for(width: int, default: int) -> int:
    """The metatile buffer that places labels up to ``width`` px wide: at least ``default``."""
    return max(default, math.ceil((width / 2 + 8) / 16) * 16)
