"""Relative paths that stay inside their root: the one check every side uses."""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
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
    if norm == ".":
        raise UnsafePath(f"path {path!r} is the folder itself; name a file or folder inside it")
    if norm == ".." or norm.startswith("../"):
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


def cache_dir() -> Path:
    """This user's farm cache: ``$XDG_CACHE_HOME/farm``, else ``~/.cache/farm`` (not made here)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "farm"


def state_dir() -> Path:
    """This user's farm state: ``$XDG_STATE_HOME/farm``, else ``~/.local/state/farm`` (not made here)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "farm"


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) and keep it to its owner: mode 0700, also if it existed."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path, siblings: tuple[str, ...] = ("-wal", "-shm", "-journal")) -> Path:
    """Create ``path`` empty if missing and make it (and existing ``siblings``, SQLite's) mode 0600.

    SQLite gives the files it creates beside a database the database's own mode, so
    creating the database private keeps its write-ahead log private too.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass  # an existing file is tightened below
    for name in ("", *siblings):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{name}", 0o600)
    return path


def unwritable(root: Path | str, rel: str) -> str | None:
    """Why farm cannot write the output folder ``root/rel`` (a checked relative path), as the
    sentence a user reads, or None if it can.

    Tried, not guessed from modes (a read-only mount, an immutable flag, ACLs): a file is made
    and removed in the folder, or in its nearest existing parent when it is still to be made.
    """
    folder = os.path.join(os.fspath(root), rel)
    probe = folder
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    where = "it" if probe == folder else f"{probe}, where it would be made,"
    why = None
    if not os.path.isdir(probe):
        why = f"{where} is not a folder"
    else:
        try:
            fd, name = tempfile.mkstemp(dir=probe, prefix=".farm-write-check-")
        except OSError as exc:
            why = f"{where} cannot be written ({exc.strerror})"
        else:
            os.close(fd)
            os.unlink(name)
    if why is None:
        return None
    return (f"cannot write the output folder {folder}: {why}; make it writable, or choose another "
            "([output] directory or --output)")
