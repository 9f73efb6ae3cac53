"""Relative paths that stay inside their root: the one check every side uses."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path


class UnsafePath(ValueError):
    """A path that is absolute, climbs out with `..`, or is otherwise not a plain relative path."""


def safe_relpath(path: str) -> str:
    """Normalise a relative POSIX path and refuse anything that could leave its root."""
    if not isinstance(path, str) or not path:
        raise UnsafePath(f"expected a relative path, got {path!r}")
    if "\x00" in path or "\\" in path:
        raise UnsafePath(f"path {path!r} contains a forbidden character")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafePath(f"path {path!r} is absolute; paths must be relative to the project")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise UnsafePath(f"path {path!r} leads outside its folder")
    if any(part == ".." for part in norm.split("/")):
        raise UnsafePath(f"path {path!r} leads outside its folder")
    return norm


def resolve_inside(root: Path, rel: str) -> Path:
    """`root / rel`, refusing paths that escape `root`, symlinks included."""
    rel = safe_relpath(rel)
    root_real = Path(os.path.realpath(root))
    full = Path(os.path.realpath(root_real / rel))
    if full != root_real and root_real not in full.parents:
        raise UnsafePath(f"path {rel!r} leads outside {root} (through a symlink)")
    return root_real / rel
