"""The files a Mapnik style reads, resolved as Mapnik resolves them and confined to the project.

Mapnik resolves a relative path in a style against the style file's folder (the base path
it is loaded with): datasource ``file`` and ``base`` parameters, symbolizer ``file``
attributes (with a ``<FileSource>`` prefix when ``base`` names one), the Map's
``background-image`` and ``font-directory``. Every one of them must stay inside the
project, through symlinks too: agents render from their copy of the project and have
nothing else, and a style must not make the controller or an agent read a file it was not
given. Datasource types are allowed by name (`FILE_DATASOURCES`, plus what the operator
allows in ``FARM_MAPTILES_DATASOURCES``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from farm.assetrules import AssetRules
from farm_maptiles.stylexml import Element, StyleProblem

#: types that read only the one file they are given (a shapefile: its .shp/.shx/.dbf siblings)
FILE_DATASOURCES = frozenset({"csv", "shape", "geojson", "topojson", "geobuf", "raster"})
#: comma-separated further datasource types this machine's operator allows (e.g. "postgis,gdal")
ALLOW_ENV = "FARM_MAPTILES_DATASOURCES"
#: Mapnik's in-memory marker prefixes (no file behind them)
_BUILTIN_MARKERS = ("shape://", "image://")
#: parameters that make a file datasource read or write other files; refused
_UNSAFE_PARAMS = {"sqlite": ("attachdb", "initdb")}
_SHAPE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".index")
#: what to do about each reason a project file does not travel (`farm.assetrules.AssetRules.left_out`)
_HINTS = {
    "exclude": "remove the pattern from [assets] exclude in farm.toml",
    "include": "add the file to [assets] include in farm.toml",
    "hidden": "rename it so that no name in its path starts with '.'",
    "output": "move the file out of the output folder",
}
#: the files Mapnik registers from a font-directory (its is_font_file), directly in it, not '.' names
FONT_SUFFIXES = frozenset({".ttf", ".otf", ".woff", ".ttc", ".pfa", ".pfb", ".dfont"})


class BadReference(StyleProblem):
    """A file or datasource the style may not use."""


@dataclass
class Datasource:
    """One layer's datasource: merged parameters (template first) and its files, resolved."""

    layer: str
    line: int
    params: dict[str, str]
    files: list[Path] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.params.get("type", "")

    def describe(self, with_file: bool = False) -> str:
        """``layer 'roads' (datasource type 'shape')``, with its ``file`` parameter if asked."""
        where = f", file {self.params['file']!r}" if with_file and "file" in self.params else ""
        return f"layer {self.layer!r} (datasource type {self.type!r}{where})"


def allowed_datasources() -> frozenset[str]:
    """`FILE_DATASOURCES` and the types named in ``FARM_MAPTILES_DATASOURCES``."""
    extra = os.environ.get(ALLOW_ENV, "")
    return FILE_DATASOURCES | {t.strip() for t in extra.split(",") if t.strip()}


def confine(value: str, style_dir: Path, root: Path, what: str, line: int,
            rules: AssetRules | None = None) -> Path:
    """``value`` resolved against the style's folder; refuses paths that leave ``root``, and
    with ``rules`` (the project's ``[assets]``, at load) files those rules keep from the agents.

    Returns the absolute path (inside ``root``). Raises `BadReference` naming ``what``.
    """
    if not value or "\x00" in value:
        raise BadReference(f"{what}: empty or invalid path {value!r}", line)
    if "[" in value or "]" in value:
        raise BadReference(
            f"{what}: path {value!r} is built from feature data, so it cannot be checked to stay inside "
            "the project; name each file in its own rule", line)
    if "://" in value:
        raise BadReference(f"{what}: {value!r} is a URL; styles may only read files inside the project", line)
    if os.path.isabs(value):
        raise BadReference(
            f"{what}: {value!r} is an absolute path; use a path relative to the style's folder, inside "
            "the project", line)
    full = Path(os.path.normpath(style_dir / value))
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(full))
    for path, base in ((full, Path(os.path.normpath(root))), (real, real_root)):
        if path != base and base not in path.parents:
            how = "" if path is full else " through a symlink"
            raise BadReference(f"{what}: {value!r} leads outside the project{how}", line)
    rel = full.relative_to(Path(os.path.normpath(root))).as_posix()
    problem = not_sent(rel, rules, "remove the reference from the style")
    if problem is not None:  # else the style loads here and every job fails on the agents
        why, fix = problem
        raise BadReference(f"{what}: {value!r} is {rel} in the project, but {why}. To fix: {fix}", line)
    return full


def not_sent(rel: str, rules: AssetRules | None, otherwise: str) -> tuple[str, str] | None:
    """(why, fix) when ``rules`` keep the project file ``rel`` (relative, POSIX) from the agents:
    ``why`` a clause about "it" naming the pattern, ``fix`` what to change, or else ``otherwise``.
    None when the file travels or there are no rules."""
    dropped = rules.left_out(rel) if rules is not None and rel != "." else None
    if dropped is None:
        return None
    kind, why = dropped
    return why, f"{_HINTS[kind]}, or {otherwise}"


def _style_name(node: Element) -> str:
    for up in (node, *node.ancestors()):
        if up.tag in ("Style", "FontSet"):
            return f"{up.tag.replace('Style', 'style')} {up.attrib.get('name', '')!r}"
    return "the Map"


def symbolizer_files(map_node: Element, style_dir: Path, root: Path,
                     rules: AssetRules | None = None) -> list[Path]:
    """Every symbolizer ``file`` and the Map's ``background-image``, confined; they must exist."""
    sources = {n.attrib.get("name", ""): _text(n) for n in map_node.iter("FileSource")}
    found = []
    for node in map_node.iter():
        value = node.attrib.get("file") if node.tag != "Map" else node.attrib.get("background-image")
        if value is None or node.tag in ("Datasource", "Parameter"):
            continue
        if value.startswith(_BUILTIN_MARKERS):
            continue
        if node.tag != "Map" and "base" in node.attrib and node.attrib["base"] in sources:
            value = sources[node.attrib["base"]] + "/" + value
        what = f"{node.tag} in {_style_name(node)}: file" if node.tag != "Map" else "Map background-image"
        path = confine(value, style_dir, root, what, node.line, rules)
        if not path.is_file():
            raise BadReference(f"{what}: {value!r} does not exist (looked for {path.relative_to(root)})",
                               node.line)
        found.append(path)
    return found


def font_directory(map_node: Element, style_dir: Path, root: Path) -> Path | None:
    """The Map's ``font-directory``, confined to the project and existing, its font files too
    (a symlinked one must not lead out); None when unset."""
    value = map_node.attrib.get("font-directory")
    if value is None:
        return None
    path = confine(value, style_dir, root, "Map font-directory", map_node.line)
    if not path.is_dir():
        raise BadReference(f"Map font-directory: {value!r} is not a folder in the project", map_node.line)
    for font in font_files(path):
        confine(os.path.relpath(font, style_dir), style_dir, root, "Map font-directory: font file",
                map_node.line)
    return path


def font_files(folder: Path) -> list[Path]:
    """The files Mapnik registers from the font-directory ``folder``: not its subfolders (sorted)."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.suffix.lower() in FONT_SUFFIXES and p.is_file())


def datasources(map_node: Element, style_dir: Path, root: Path,
                rules: AssetRules | None = None) -> list[Datasource]:
    """Every layer's datasource with its parameters merged as Mapnik merges them, checked.

    Raises `BadReference` for a type not allowed here, a parameter that reads other
    files, or a file that leaves the project or does not exist.
    """
    templates: dict[str, dict[str, str]] = {}
    for node in map_node.iter("Datasource"):
        if node.parent is not None and node.parent.tag != "Layer":
            templates[node.attrib.get("name", "Unnamed")] = _params(node)
    allowed = allowed_datasources()
    found = []
    for layer in map_node.iter("Layer"):
        for node in layer.children:
            if node.tag != "Datasource":
                continue
            params = dict(templates.get(node.attrib.get("base", ""), {}))
            params.update(_params(node))
            ds = Datasource(layer.attrib.get("name", ""), node.line, params)
            _check(ds, allowed, style_dir, root, rules)
            found.append(ds)
    return found


def _text(node: Element) -> str:
    """An element's text as Mapnik reads it: trimmed of ASCII whitespace at both ends."""
    return node.text.strip(" \t\n\v\f\r")


def _params(node: Element) -> dict[str, str]:
    return {p.attrib.get("name", ""): _text(p) for p in node.children if p.tag == "Parameter"}


def _check(ds: Datasource, allowed: frozenset[str], style_dir: Path, root: Path,
           rules: AssetRules | None) -> None:
    if ds.type not in allowed:
        reason = ("it reads data from outside the project" if ds.type not in ("gdal", "ogr", "sqlite")
                  else "its files can name further files, outside the project")
        raise BadReference(
            f"{ds.describe()}: datasource type {ds.type!r} is not allowed here ({reason}); allowed: "
            f"{', '.join(sorted(allowed))}. The operator can allow more types with {ALLOW_ENV}", ds.line)
    for name in _UNSAFE_PARAMS.get(ds.type, ()):
        if name in ds.params:
            raise BadReference(f"{ds.describe()}: parameter {name!r} is not allowed (it opens other files)",
                               ds.line)
    folder = style_dir
    if "base" in ds.params:
        folder = confine(ds.params["base"], style_dir, root, f"{ds.describe()}: base", ds.line)
    if "file" not in ds.params:
        return
    # a shapefile's name may lack .shp: its parts, below, are the files the rules must send
    path = confine(ds.params["file"], folder, root, f"{ds.describe()}: file", ds.line,
                   None if ds.type == "shape" else rules)
    main = path
    if ds.type == "shape":  # Mapnik adds .shp, .shx, .dbf to the name, with or without .shp
        stem = path.with_suffix("") if path.suffix.lower() == ".shp" else path
        main = Path(f"{stem}.shp")
        ds.files = [p for p in (Path(f"{stem}{ext}") for ext in _SHAPE_PARTS) if os.path.lexists(p)]
        for part in ds.files:  # each sibling may be a symlink of its own
            confine(os.path.relpath(part, folder), folder, root, f"{ds.describe()}: file", ds.line, rules)
    else:
        ds.files = [path]
    if not main.is_file():
        raise BadReference(f"{ds.describe()}: the file does not exist (looked for {main.relative_to(root)})",
                           ds.line)
    if ds.type == "shape":  # Mapnik's own error for these quotes nothing farm may show: say which part
        for part in (Path(f"{stem}.shx"), Path(f"{stem}.dbf")):
            if not part.is_file():
                raise BadReference(f"{ds.describe()}: {part.relative_to(root)} does not exist (Mapnik reads "
                                   "a shapefile's .shp, .shx and .dbf together)", ds.line)
