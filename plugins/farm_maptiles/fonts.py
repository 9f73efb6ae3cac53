"""Every ``face-name`` a style uses must be a font Mapnik can open, as Mapnik's strict load demands.

Without the check Mapnik loads the style, warns on stderr, and renders every such label as
nothing: a run that says done with no labels. The faces Mapnik can open are the fonts
bundled with the mapnik package (registered in every process that renders) and those in the
style's own ``font-directory``. Each face is asked of Mapnik itself, through a strict load
of a one-symbolizer style, so the answer is Mapnik's and fonts in the project's folder are
registered on that probe map only, never for the whole process.

At load, the agents' font-directory is the one ``[assets]`` sends them: a face found only in
font files left out is refused (each agent would render its labels as nothing), and so is a
folder of which no file travels (farm sends files, so the agents would not have the folder).
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import quoteattr

from farm.assetrules import AssetRules
from farm_maptiles.references import BadReference, font_files, not_sent
from farm_maptiles.stylexml import Element, StyleProblem


class MissingFont(StyleProblem):
    """A face-name nobody installed."""


def face_available(face: str, font_dir: Path | None) -> bool:
    """Whether Mapnik can open ``face`` with its registered fonts plus ``font_dir``."""
    import mapnik

    # a folder without fonts fails a strict load whatever the face; the render's load only warns
    shipping = font_dir is not None and font_files(font_dir)
    directory = f" font-directory={quoteattr(str(font_dir))}" if shipping else ""
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


def check_fonts(map_node: Element, font_dir: Path | None, root: Path | None = None,
                rules: AssetRules | None = None) -> None:
    """Raise `MissingFont` for the first ``face-name`` (any element, fontsets included) Mapnik cannot open.

    With ``rules`` (the project's ``[assets]``, at load) and ``root`` (the project), a face found
    only in font files of ``font_dir`` that the rules keep from the agents raises `MissingFont`
    naming the file and the pattern, and a ``font_dir`` none of whose files travel `BadReference`.
    """
    import mapnik

    faces: dict[str, Element] = {}  # each face at its first use, in document order
    for node in map_node.iter():
        if "face-name" in node.attrib:
            faces.setdefault(node.attrib["face-name"], node)
    for face, node in faces.items():
        if face_available(face, font_dir):
            continue
        close = difflib.get_close_matches(face, list(mapnik.FontEngine.face_names()), n=3, cutoff=0.5)
        hint = f"; similar installed faces: {', '.join(map(repr, close))}" if close else ""
        shipped = "" if font_dir is None else f" nor in the style's font-directory ({font_dir.name})"
        raise MissingFont(
            f"face-name {face!r} ({_context(node)}) is not installed{shipped}{hint}. Ship the font in the "
            "project and point the Map's font-directory attribute at its folder", node.line)
    if font_dir is not None and root is not None and rules is not None:
        _check_sent(map_node, faces, font_dir, root, rules)


def _check_sent(map_node: Element, faces: dict[str, Element], font_dir: Path, root: Path,
                rules: AssetRules) -> None:
    """The faces are there on the agents too, and so is the folder."""
    withheld = {}
    for font in font_files(font_dir):
        problem = not_sent(_rel(font, root), rules, "use another face in the style")
        if problem is not None:
            withheld[font] = problem
    if withheld:
        with _folder_of([f for f in font_files(font_dir) if f not in withheld]) as sent:
            for face, node in faces.items():
                if face_available(face, sent):
                    continue
                font = next((f for f in withheld if _in_file(face, f)), next(iter(withheld)))
                why, fix = withheld[font]
                raise MissingFont(
                    f"face-name {face!r} ({_context(node)}) is only in the font file {_rel(font, root)} "
                    f"of the style's font-directory, but {why}. To fix: {fix}", node.line)
    first = None
    for folder, _, files in os.walk(font_dir):  # any file under it makes the folder exist there
        for name in sorted(files):
            rel = _rel(Path(folder, name), root)
            problem = not_sent(rel, rules, "remove the Map's font-directory attribute")
            if problem is None:
                return
            first = first or (rel, problem)
    value = map_node.attrib["font-directory"]
    if first is None:
        raise BadReference(
            f"Map font-directory: {value!r} holds no file, and farm sends files, not folders: the agents "
            "would not have it. To fix: put the style's fonts in it, or remove the font-directory attribute",
            map_node.line)
    rel, (why, fix) = first
    raise BadReference(
        f"Map font-directory: {value!r} has no file that reaches the agents, so they would not have the "
        f"folder ({rel}, for one: {why}). To fix: {fix}", map_node.line)


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _in_file(face: str, font: Path) -> bool:
    with _folder_of([font]) as folder:
        return face_available(face, folder)


@contextmanager
def _folder_of(fonts: list[Path]) -> Iterator[Path]:
    """A temporary font-directory holding only ``fonts`` (symlinks, which Mapnik follows)."""
    with tempfile.TemporaryDirectory(prefix="farm-fonts-") as tmp:
        for font in fonts:
            os.symlink(os.path.abspath(font), os.path.join(tmp, font.name))
        yield Path(tmp)
