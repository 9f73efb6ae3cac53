"""SQLite's side files (``NAME-wal``, ``NAME-shm``, ``NAME-journal``): they belong to the one file
``NAME`` they lie beside, as it was when they were written. Served without it, or left beside a
newer copy of it, they make SQLite read a malformed or stale database, so outputs are served
without them and a download that replaces ``NAME`` removes the old ones."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable

log = logging.getLogger(__name__)

SUFFIXES = ("-wal", "-shm", "-journal")
_HEADER = b"SQLite format 3\0"


def side_files(rels: Iterable[str]) -> set[str]:
    """Those of ``rels`` that are the side files of another of ``rels``."""
    present = set(rels)
    return {rel for rel in present for suffix in SUFFIXES
            if rel.endswith(suffix) and rel[: -len(suffix)] in present}


def is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(_HEADER)) == _HEADER
    except OSError:
        return False


def remove_stale(target: str, keep: Iterable[str] = ()) -> list[str]:
    """Remove the side files of the SQLite file ``target`` being replaced, but for the suffixes in
    ``keep`` (side files that come with the new file); returns their paths."""
    removed = []
    for suffix in SUFFIXES:
        side = target + suffix
        if suffix in keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(side)
            removed.append(side)
            log.info("removed %s: it belonged to the SQLite file %s this replaced", side, target)
    return removed
