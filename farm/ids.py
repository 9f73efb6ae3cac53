"""Identifiers that may become paths: the one check for names and keys, wherever they enter.

Project and run names, agent ids and media type names are *names*: one path component.
Job keys are *keys*: names joined by ``/`` (maptiles keys read ``7/12/40``), always relative.
Everything that arrives from a `farm.toml` or from the network goes through `check_name` or
`check_key` before it is used, so no identifier can climb out of a folder, hide a separator
or a control character, or exceed what a file system takes.

A name is 1..`MAX_NAME` characters (at most 255 bytes of UTF-8), NFKC-normal (so no
fullwidth solidus or full stop that a later normalisation would turn into a separator), with no
``/``, ``\\``, control, format (zero-width, bidi), private-use, surrogate or unassigned
characters, no separator but the plain space, not ``.`` or ``..``, not starting with ``-``
(it would read as an option) and without spaces at either end.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from farm.errors import FarmError

MAX_NAME = 128  # characters; a run id adds 9 to a project name and stays under 255 bytes
MAX_NAME_BYTES = 200
MAX_KEY = 1024  # characters of a job key, all its parts together
MAX_KEY_PARTS = 16


class BadIdentifier(FarmError, ValueError):
    """An identifier (name or key) that could not safely name a file or folder."""


def _why_not_name(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return "is empty"
    if len(value) > MAX_NAME or (not value.isascii()  # ASCII: a byte a character, MAX_NAME < MAX_NAME_BYTES
                                 and len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES):
        return f"is too long ({len(value)} characters; at most {MAX_NAME}, {MAX_NAME_BYTES} bytes)"
    if value in (".", ".."):
        return "names a folder itself or its parent"
    if value.isascii() and value.isprintable():  # the common case, checked in C: no control characters,
        if "/" in value or "\\" in value:  # no separator but the space, already NFKC
            first = min(value.find(c) for c in "/\\" if c in value)
            return f"contains the path separator {value[first]!r}"
    else:
        why = _why_not_unicode(value)
        if why is not None:
            return why
    if value.startswith("-"):
        return "starts with '-'"
    if value != value.strip():
        return "starts or ends with a space"
    return None


def _why_not_unicode(value: str) -> str | None:
    for char in value:
        if char in "/\\":
            return f"contains the path separator {char!r}"
        category = unicodedata.category(char)
        if category[0] == "C" or (category[0] == "Z" and char != " "):
            return f"contains the character U+{ord(char):04X} ({unicodedata.name(char, category)})"
    if unicodedata.normalize("NFKC", value) != value:
        return "is not in Unicode normal form NFKC (it holds look-alike compatibility characters)"
    return None


def check_name(value: Any, what: str = "name") -> str:
    """``value`` if it is a safe single path component, else raise `BadIdentifier` naming ``what``."""
    why = _why_not_name(value)
    if why is not None:
        raise BadIdentifier(f"{what} {_show(value)} {why}")
    return value


def check_key(value: Any, what: str = "job key") -> str:
    """``value`` if it is names joined by ``/`` (relative, no empty or dot parts), else `BadIdentifier`."""
    if not isinstance(value, str):
        raise BadIdentifier(f"{what} {_show(value)}: expected a string, got {type(value).__name__}")
    if len(value) > MAX_KEY:
        raise BadIdentifier(f"{what} {_show(value)} is too long ({len(value)} characters; at most {MAX_KEY})")
    parts = value.split("/")
    if len(parts) > MAX_KEY_PARTS:
        raise BadIdentifier(f"{what} {_show(value)} has {len(parts)} parts (at most {MAX_KEY_PARTS})")
    for part in parts:
        why = _why_not_name(part)
        if why is not None:
            where = "" if len(parts) == 1 else f" (its part {_show(part)})"
            raise BadIdentifier(f"{what} {_show(value)}{where} {why}")
    return value


def _show(value: Any) -> str:
    """A short, printable rendering of a hostile value for an error message."""
    text = repr(value)  # escapes control, format and other unprintable characters
    return text if len(text) <= 80 else text[:60] + "..." + text[-10:]
