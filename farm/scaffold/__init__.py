"""`farm plugin new`: a new media-type plugin package, written from the template shipped in farm.

The template (``farm/scaffold/template``) is package data: its files end in ``.tmpl`` and hold
``${name}``-style placeholders (`string.Template`); ``package/`` becomes the plugin's module.
"""

from __future__ import annotations

import importlib.util
import re
import string
from collections.abc import Iterator
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path

from farm.errors import FarmError

#: a plugin name: a media type name that is also the tail of a Python module name
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}\Z")


class BadName(FarmError):
    """A new plugin's name may not be used (a usage error): not a lower-case identifier of at
    most 40 characters, or taken (`NameTaken`)."""


class NameTaken(BadName):
    """A new plugin's name is an installed media type's, or its module or distribution is
    installed already: installing the package would clash with it (a usage error)."""


def new_plugin(name: str, parent: Path | str = ".") -> Path:
    """Write the package ``farm-<name>`` into ``parent/farm-<name>`` and return that folder.

    The package has a ``pyproject.toml`` with the ``farm.plugins`` entry point, the module
    ``farm_<name>`` with one `farm.mediatype.MediaType` subclass, a sample project in
    ``project/`` and tests (``tests/``) that pass as written.

    :raises BadName: ``name`` is not a lower-case identifier of at most 40 characters.
    :raises NameTaken: ``name`` is taken where the package would be installed (see `name_taken`).
    :raises FarmError: the target folder exists already.
    """
    if not NAME.match(name):
        raise BadName(f"plugin name {name!r}: use a lower-case letter, then letters, digits or _ "
                        "(at most 40): it names the media type and the module farm_<name>")
    values = {
        "name": name,
        "module": f"farm_{name}",
        "dist": f"farm-{name.replace('_', '-')}",
        "cls": "".join(part.capitalize() for part in name.split("_")),
    }
    clash = name_taken(name)
    if clash:
        raise NameTaken(f"plugin name {name!r}: {clash}; choose another name")
    target = Path(parent) / values["dist"]
    if target.exists():
        raise FarmError(f"{target} exists already; choose another --dir or remove it")
    template = resources.files(__package__) / "template"
    for source, rel in _walk(template, ""):
        rel = rel.replace("test_package", f"test_{name}").replace("package/", f"{values['module']}/")
        dest = target / rel.removesuffix(".tmpl")
        dest.parent.mkdir(parents=True, exist_ok=True)
        text = string.Template(source.read_text(encoding="utf-8")).substitute(values)
        dest.write_text(text, encoding="utf-8")
    return target


def name_taken(name: str) -> str | None:
    """Why the plugin ``name`` would clash with what this Python has installed, or None.

    It clashes where an installed plugin's entry point or media type has that name (built-in
    or not: farm would refuse both, `farm.plugins`), or the module ``farm_<name>`` is
    importable, or the distribution ``farm-<name>`` is installed. Lists every plugin's media
    types, so imports them all.
    """
    from farm.plugins import ENTRY_POINT_GROUP, describe, get_plugins, provider

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return f"media type {name!r} is installed already: {provider(ep)}"
    plugins = get_plugins()
    if name in plugins.media_types:
        return f"media type {name!r} is installed already: {describe(plugins.owner(name))}"
    module = f"farm_{name}"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a module of that name is half there: taken all the same
        spec = True
    if spec is not None:
        return f"the module {module} is importable already ({getattr(spec, 'origin', None) or 'a package'})"
    dist = f"farm-{name.replace('_', '-')}"
    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    return f"the distribution {dist} {found.version} is installed already"


def _walk(folder: Traversable, prefix: str) -> Iterator[tuple[Traversable, str]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".tmpl"):
            yield entry, prefix + entry.name
