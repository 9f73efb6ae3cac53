"""Every ``face-name`` a style uses must be a font Mapnik can open, as Mapnik's strict load demands.

Without the check Mapnik loads the style, warns on stderr, and renders every such label as
nothing: a run that says done with no labels. The faces Mapnik can open are the fonts
bundled with the mapnik package (registered in every process that renders) and those in the
style's own ``font-directory``. Each face is asked of Mapnik itself, through a strict load
of a one-symbolizer style, so the answer is Mapnik's and fonts in the project's folder are
registered on that probe map only, never for the whole process.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from xml.sax.saxutils import quoteattr

from farm_maptiles.stylexml import Element, StyleProblem


class MissingFont(StyleProblem):
    """A face-name nobody installed."""


def face_available(face: str, font_dir: Path | None) -> bool:
    """Whether Mapnik can open ``face`` with its registered fonts plus ``font_dir``."""
    import mapnik

    directory = f" font-directory={quoteattr(str(font_dir))}" if font_dir is not None else ""
    symbolizer = f"<TextSymbolizer face-name={quoteattr(face)} size='10'>'x'</TextSymbolizer>"
    probe = f"<Map{directory}><Style name='probe'><Rule>{symbolizer}</Rule></Style></Map>"
    try:
        mapnik.load_map_from_string(mapnik.Map(8, 8), probe, True, "")
    except RuntimeError:
        return False
    return True


def _context(node: Element) -> str:
    """``style 'labels', TextSymbolizer`` or ``FontSet 'fallback'``: where a face-name sits."""
    symbolizer = next((n.tag for n in (node, *node.ancestors()) if n.tag.endswith("Symbolizer")), node.tag)
    for up in node.ancestors():
        if up.tag == "Style":
            return f"in style {up.attrib.get('name', '')!r}, {symbolizer}"
        if up.tag == "FontSet":
            return f"in FontSet {up.attrib.get('name', '')!r}, <{node.tag}>"
    return f"in {symbolizer}"


def check_fonts(map_node: Element, font_dir: Path | None) -> None:
    """Raise `MissingFont` for the first ``face-name`` (any element, fontsets included) Mapnik cannot open."""
    import mapnik

    answers: dict[str, bool] = {}
    for node in map_node.iter():
        face = node.attrib.get("face-name")
        if face is None:
            continue
        if face not in answers:
            answers[face] = face_available(face, font_dir)
        if answers[face]:
            continue
        close = difflib.get_close_matches(face, list(mapnik.FontEngine.face_names()), n=3, cutoff=0.5)
        hint = f"; similar installed faces: {', '.join(map(repr, close))}" if close else ""
        shipped = "" if font_dir is None else f" nor in the style's font-directory ({font_dir.name})"
        raise MissingFont(
            f"face-name {face!r} ({_context(node)}) is not installed{shipped}{hint}. Ship the font in the "
            "project and point the Map's font-directory attribute at its folder", node.line)
