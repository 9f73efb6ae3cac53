"""Refusing a folder farm writes into when it holds a symlink anywhere.

A project's output folder (and the embedded farm's state folder, ``.farm/``) is written by
plugins with plain `open`, `shutil.move` and SQLite, which follow links: a link left in a
downloaded project (``output/collated.log`` to a file of the user's, ``output/tiles`` to
another folder) would make a run write outside the project. farm itself makes no symlink
in either folder, so a run whose folder holds one is refused before any job runs.

The walk is one `os.scandir` per folder and no `stat` per file (the entry's ``d_type`` says
what it is), so an output folder of 100,000 tiles costs a few tens of milliseconds.
"""

from __future__ import annotations

import os
import shlex
import stat
import time
from pathlib import Path

from farm.errors import FarmError

_SHOWN = 3  # links named in the message; the rest are counted


class LinkRefused(FarmError):
    """A folder farm would write into holds a symlink."""


def find_links(root: Path | str, rel: str, *, deadline: float | None = None) -> list[str]:
    """Paths (relative to ``root``) of the symlinks at or under ``root/rel``: a part of ``rel``
    itself, or anything in the tree beneath it (not entered through a link). ``rel`` is a
    checked relative path (`farm.paths.safe_relpath`); a missing folder holds none."""
    root = os.fspath(root)
    current = ""
    for part in rel.split("/"):
        current = f"{current}/{part}" if current else part
        try:
            st = os.lstat(os.path.join(root, current))
        except (FileNotFoundError, NotADirectoryError):
            return []
        if stat.S_ISLNK(st.st_mode):
            return [current]
        if not stat.S_ISDIR(st.st_mode):
            return []
    found: list[str] = []
    folders = [current]
    seen = 0
    while folders:
        folder = folders.pop()
        try:
            entries = os.scandir(os.path.join(root, folder))
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed meanwhile
        with entries:
            for entry in entries:
                if entry.is_symlink():
                    found.append(f"{folder}/{entry.name}")
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(f"{folder}/{entry.name}")
        seen += 1
        if deadline is not None and seen % 256 == 0 and time.monotonic() > deadline:
            raise LinkRefused(f"{root}: looking for symlinks in {rel}/ took too long")
    return sorted(found)


def refuse_links(root: Path | str, rel: str, what: str, *, deadline: float | None = None) -> None:
    """Raise `LinkRefused` naming the symlinks at or under ``root/rel`` (``what``: the folder, in words)."""
    links = find_links(root, rel, deadline=deadline)
    if not links:
        return
    first = links[0]
    try:
        to = f" (to {os.readlink(os.path.join(root, first))})"
    except OSError:
        to = ""
    named = ", ".join(links[:_SHOWN]) + (f" and {len(links) - _SHOWN} more" if len(links) > _SHOWN else "")
    are = "are symlinks" if len(links) > 1 else f"is a symlink{to}"
    command = "rm " + " ".join(shlex.quote(os.path.join(root, link)) for link in links[:_SHOWN])
    raise LinkRefused(f"{named} in {root} {are}: farm does not write through links in {what}; "
                      f"remove {'them' if len(links) > 1 else 'it'} ({command}"
                      f"{' ...' if len(links) > _SHOWN else ''}) and run again")
