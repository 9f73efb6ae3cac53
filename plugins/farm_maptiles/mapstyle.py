"""Loading a Mapnik XML style into a `mapnik.Map` ready to render Web Mercator tiles.

Before Mapnik sees a style, farm reads it itself (`stylexml`) and checks what it refers to:
files confined to the project and resolved against the style's folder (`references`),
faces that exist (`fonts`). Mapnik then loads it with the style's folder as base path, as
``mapnik.load_map`` and renderd do. The same checks run on the controller at load and on
each agent before it renders. Mapnik is imported inside the functions, so the plugin loads
(and says why it cannot render) on a machine without it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.assetrules import AssetRules
from farm_maptiles import fonts, labels, mapnikerror, references
from farm_maptiles.stylexml import Element, StyleProblem, parse_style

log = logging.getLogger(__name__)

#: tiles are always rendered in spherical mercator, whatever the style's own srs says
MERCATOR_SRS = "epsg:3857"
#: pixels rendered around a metatile when neither the project nor the style says (renderd's default)
DEFAULT_BUFFER = 128
_LAYER = re.compile(r"layer '([^']*)'")
#: narrow-buffer warnings already given in this process
_warned: set[tuple[str, int, int]] = set()


class StyleError(ValueError):
    """A style farm will not render: the message names the style file and line where known."""


@dataclass
class Style:
    """A checked style: its element tree, its folder (the base of its relative paths), its datasources."""

    path: Path
    root: Path
    tree: Element
    xml: bytes  # what was checked is what Mapnik loads (the file could change in between)
    datasources: list[references.Datasource]
    font_dir: Path | None
    files: list[Path]  # every file it reads (data, images), so a change to one can be noticed

    @property
    def name(self) -> str:
        return self.path.relative_to(self.root).as_posix()

    def inputs(self) -> list[str] | None:
        """The project files rendering reads (sorted relative POSIX paths): the style, its data
        and images, the fonts of its font-directory. None when a datasource type outside
        `references.FILE_DATASOURCES` is used (an operator-allowed type can read files it does
        not name), so its jobs count every asset as read."""
        if any(ds.type not in references.FILE_DATASOURCES for ds in self.datasources):
            return None
        fonts_read = references.font_files(self.font_dir) if self.font_dir is not None else []
        root = Path(os.path.normpath(self.root))
        return sorted({Path(os.path.normpath(f)).relative_to(root).as_posix()
                       for f in (self.path, *self.files, *fonts_read)})

    def error(self, message: str, line: int | None) -> StyleError:
        return StyleError(f"{self.name}:{line}: {message}" if line else f"{self.name}: {message}")


def read_style(path: Path, root: Path, rules: AssetRules | None = None, *, faces: bool = True) -> Style:
    """Parse the style at ``path`` (inside project ``root``) and check everything it refers to.

    Raises `StyleError` for XML farm cannot check, a path leaving the project, a missing file,
    a file ``rules`` (the project's ``[assets]``, at load) keep from the agents, a datasource
    type not allowed here, or (``faces``: needs Mapnik) a ``face-name`` Mapnik cannot open
    (with ``rules``: on the agents, from the font files they get).
    """
    name = path.relative_to(root).as_posix()
    try:
        references.confine(name, root, root, "the style file", 0)  # a symlink out, too
        xml = path.read_bytes()
        tree = parse_style(xml)
    except OSError as exc:
        raise StyleError(f"{name}: cannot read the style ({exc.strerror})") from None
    except StyleProblem as exc:
        raise StyleError(f"{name}:{exc.line}: {exc}" if exc.line else f"{name}: {exc}") from None
    folder = path.parent
    style = Style(path, root, tree, xml, [], None, [])
    try:
        style.font_dir = references.font_directory(tree, folder, root)
        style.files = references.symbolizer_files(tree, folder, root, rules)
        style.datasources = references.datasources(tree, folder, root, rules)
        style.files += [f for ds in style.datasources for f in ds.files]
        if faces:
            fonts.check_fonts(tree, style.font_dir, root, rules)
    except StyleProblem as exc:
        raise style.error(str(exc), exc.line) from None
    return style


def _mapnik_error(style: Style, exc: RuntimeError) -> StyleError:
    """Mapnik's error in its own words (`mapnikerror.reason`: its first line, paths outside the
    project redacted); one from a datasource names the layer and its file first."""
    text = str(exc).strip()
    said = mapnikerror.reason(text, style.root) or "no reason given"
    found = _LAYER.search(text)
    if found is None and "layer" not in text.lower():
        return style.error(f"Mapnik cannot load the style: {said}", None)
    ds = next((d for d in style.datasources if found and d.layer == found.group(1)), None)
    if ds is None:
        return style.error(f"Mapnik cannot open a layer's datasource: {said}", None)
    return style.error(f"{ds.describe(with_file=True)}: Mapnik cannot read it as {ds.type!r} data: {said}",
                       ds.line)


def load_map(style: Style, size: int = 256, buffer: int | None = None) -> Any:
    """A square ``size`` px `mapnik.Map` of a checked style, in EPSG:3857.

    ``buffer`` px are rendered around the map; None: the style's ``buffer-size``, else
    `DEFAULT_BUFFER`. Raises `StyleError` when Mapnik rejects the style or its data.
    """
    import mapnik

    m = mapnik.Map(size, size)
    try:
        mapnik.load_map_from_string(m, style.xml.decode("utf-8"), False, str(style.path.parent))
    except RuntimeError as exc:
        raise _mapnik_error(style, exc) from None
    except UnicodeDecodeError as exc:
        raise style.error(f"the style is not UTF-8 (byte {exc.start}), which Mapnik needs", None) from None
    m.srs = MERCATOR_SRS
    m.buffer_size = style_buffer(style) if buffer is None else buffer
    return m


def style_buffer(style: Style) -> int:
    """The Map's ``buffer-size``, else `DEFAULT_BUFFER`."""
    value = style.tree.attrib.get("buffer-size")
    try:
        return max(int(float(value)), 0) if value is not None else DEFAULT_BUFFER
    except ValueError:
        return DEFAULT_BUFFER


def choose_buffer(style: Style, m: Any, setting: int | None) -> int:
    """The metatile buffer: ``setting`` ([maptiles] buffer) if given, else the style's
    ``buffer-size`` if it sets one, else one derived from the widest label (at least 128 px).

    Logs a warning when a set buffer is narrower than the labels need.
    """
    widest = labels.widest_label(style.tree, m)
    needed = labels.buffer_for(widest, 0)
    if setting is not None:
        chosen, source = setting, "[maptiles] buffer"
    elif "buffer-size" in style.tree.attrib:
        chosen, source = style_buffer(style), f"buffer-size in {style.name}"
    else:
        return max(DEFAULT_BUFFER, needed)
    warning = (str(style.path), chosen, needed)
    if chosen < needed and warning not in _warned:  # the controller loads a project more than once
        _warned.add(warning)
        log.warning("%s: labels up to about %d px wide may be cut where metatiles meet: %s is %d px; "
                    "set [maptiles] buffer = %d (or remove the setting to derive it)",
                    style.name, widest, source, chosen, needed)
    return chosen


def check_style(path: Path, root: Path, buffer: int | None = None,
                rules: AssetRules | None = None) -> tuple[int, Style]:
    """Check the style fully (`read_style`, then Mapnik loads it with its data); returns the
    buffer to use and the checked style."""
    register_fonts()
    style = read_style(path, root, rules)
    return choose_buffer(style, load_map(style), buffer), style


def register_fonts() -> None:
    """Register the fonts bundled with the Mapnik wheel (idempotent; once per process is enough)."""
    import mapnik

    mapnik.register_fonts(mapnik.paths.fontscollectionpath)
