"""Saying that a collate or finalize failed because the output folder (or a folder in it) was removed
while the run wrote there: the OS error alone names a tile, or no file at all (SQLite's "attempt to
write a readonly database" for a database file deleted while open)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from farm.causes import cause
from farm.errors import FarmError


class OutputRemoved(FileNotFoundError, FarmError):
    """A file a media type kept open in the output folder was removed, or its folder was (`check`)."""

    @classmethod
    def check(cls, path: Path, folder: Path, folder_st: os.stat_result, why: str | None,
              file_st: os.stat_result | None = None, what: str = "") -> OutputRemoved | None:
        """The error to raise when `path` (under `folder`) is gone, or `folder` (whose stat, taken before
        the run wrote there, is `folder_st`) was removed, and perhaps made again since; `why`: the
        error that showed it (None: found before any). With `file_st` (the stat of the file the run
        holds open, e.g. "the MBTiles file " as `what`), a file of that name that is another one now
        is said too: SQLite goes on writing into the unlinked one. None when none of that is so."""
        if moved(folder, folder_st):
            rel = os.path.relpath(path, folder)
            said = f"the output folder {folder} was removed during the run ({rel}: {why or 'found'})"
        elif file_st is not None and moved(path, file_st):
            said = f"{what}{path} was removed or replaced while the run wrote it"
            said += f" ({why})" if why else ""
        elif file_st is None and not path.exists():
            said = f"{path} was removed during the run ({why})"
        else:
            return None
        return cls(errno.ENOENT, said, str(path))

    def __str__(self) -> str:  # the message names the file already
        return self.strerror


def moved(path: Path, before: os.stat_result) -> bool:
    """`path` is not the file (or folder) whose stat was `before`: removed, or replaced."""
    try:
        now = path.stat()
    except OSError:
        return True
    return (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino)


def removed(exc: BaseException) -> OutputRemoved | None:
    """The `OutputRemoved` in what `exc` came from (its causes and contexts), or None."""
    return cause(exc, lambda e: isinstance(e, OutputRemoved))


def removed_during_run(folder: Path, exc: BaseException) -> str | None:
    """Why ``exc`` happened, when it is because ``folder`` or a folder under it is gone; else None."""
    said = removed(exc)
    if said is not None:
        return str(said)
    how = f"{type(exc).__name__}: {exc}"
    if not folder.is_dir():
        return f"the output folder {folder} was removed during the run ({how})"
    lost = cause(exc, lambda e: _lost_under(folder, e))
    if lost is None:
        return None
    gone = os.path.dirname(lost.filename)
    return f"{gone} was removed during the run (in the output folder {folder}; {how})"


def _lost_under(folder: Path, exc: BaseException) -> bool:
    """A file not found under ``folder`` because its own folder is gone."""
    if not isinstance(exc, FileNotFoundError) or not isinstance(exc.filename, str):
        return False
    parent = os.path.dirname(exc.filename)
    return parent.startswith(str(folder) + os.sep) and not os.path.isdir(parent)
