"""Mapnik's own words for an error, fit to show whoever reads a run's errors.

Mapnik's messages name files by absolute path (the controller's or an agent's folders, which say
nothing to the submitter and something about the machine) and can quote a line of a data file
after the first line (the CSV plugin quotes the header it could not read). So only the first line
is kept, a path inside the project is shown relative to it, and any other absolute path is
replaced by ``<a path outside the project>``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: an absolute path: a slash that starts a word (not the one in ``x/y``), up to a space or quote
_ABSOLUTE = re.compile(r"(?<![\w.~-])/[^\s'\"(),;]+")
#: what Mapnik appends to a layer's error at load
_AT_LOAD = re.compile(r"\s+encountered during parsing of layer '[^']*' in Layer\s*$")
OUTSIDE = "<a path outside the project>"
MAX_REASON = 300


def reason(message: str, root: Path) -> str | None:
    """Mapnik's ``message`` cut to its first line, paths inside ``root`` made relative to it and
    others redacted; None if nothing is left (the caller says what it knows instead)."""
    lines = message.strip().splitlines()
    if not lines:
        return None
    first = _AT_LOAD.sub("", lines[0]).strip()
    roots = {os.path.normpath(root), os.path.realpath(root)}

    def shown(found: re.Match[str]) -> str:
        path = os.path.normpath(found.group())
        for base in roots:
            if path == base:
                return "."
            if path.startswith(base + os.sep):
                return Path(os.path.relpath(path, base)).as_posix()
        return OUTSIDE

    first = _ABSOLUTE.sub(shown, first)[:MAX_REASON]
    if len(lines) > 1:
        first += " (Mapnik's next lines, which can quote the file, are left out)"
    return first or None
