"""Tiles in the output folder that this run did not make: removed when it finalizes.

The MBTiles file and ``tiles/`` are written in place (a resumed run adds to what its first part
wrote), so a run over an earlier run's output with other settings found that run's tiles still
there: zoom levels and places outside this run's zoom range and bbox (its MBTiles metadata then
named a range the file did not match), and, where one of this run's jobs failed, the earlier
tiles of that place, made perhaps with another style. At finalize every tile outside this run's
zoom range and bbox, and every tile of a job that failed, is removed from both (only names of
tiles: ``tiles/<z>/<x>/<y>.png``; other files stay), and one warning says how many and why.
Tiles inside the range of jobs that did not fail are this run's: rendered, reused from the job
cache, or done before a resume with the same settings.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from farm_maptiles.tilemath import TileRange, metatile_size, tile_range, tms_row

#: a zoom's rows outside a range, and inside one (MBTiles rows are TMS: counted from the south)
_OUTSIDE = ("DELETE FROM tiles WHERE zoom_level = ? AND (tile_column < ? OR tile_column > ? OR tile_row < ? "
            "OR tile_row > ?)")
_INSIDE = ("DELETE FROM tiles WHERE zoom_level = ? AND tile_column BETWEEN ? AND ? AND tile_row BETWEEN ? "
           "AND ?")


def wanted(settings: Mapping[str, Any]) -> dict[int, TileRange]:
    """This run's tiles: zoom -> the range inside its bbox."""
    return {z: tile_range(settings["bbox"], z) for z in range(settings["minzoom"], settings["maxzoom"] + 1)}


def failed_ranges(keys: Iterable[str], settings: Mapping[str, Any]) -> list[TileRange]:
    """The tiles of failed jobs, from their keys (``z/x/y``: one metatile; ``z/x/y+n``: ``n`` of one row)."""
    found = []
    for key in keys:
        first, _, count = key.partition("+")
        try:
            z, x, y = (int(part) for part in first.split("/"))
            n = int(count) if count else 1
        except ValueError:  # not a maptiles key: nothing of ours to remove
            continue
        inside = wanted(settings).get(z)
        if inside is None:
            continue
        size = metatile_size(settings["metatile"], z)
        cut = TileRange(z, max(x, inside.x0), max(y, inside.y0), min(x + n * size - 1, inside.x1),
                        min(y + size - 1, inside.y1))
        if cut.x0 <= cut.x1 and cut.y0 <= cut.y1:
            found.append(cut)
    return found


def remove_from_mbtiles(db: sqlite3.Connection, keep: Mapping[int, TileRange], drop: list[TileRange]) -> int:
    """Delete the rows outside ``keep`` and inside ``drop`` (one transaction); how many."""
    removed = 0
    with db:
        zooms = sorted(keep)
        removed += db.execute("DELETE FROM tiles WHERE zoom_level < ? OR zoom_level > ?",
                              (zooms[0], zooms[-1])).rowcount
        for z, r in keep.items():
            removed += db.execute(_OUTSIDE, (z, r.x0, r.x1, tms_row(z, r.y1), tms_row(z, r.y0))).rowcount
        for r in drop:
            removed += db.execute(_INSIDE, (r.z, r.x0, r.x1, tms_row(r.z, r.y1), tms_row(r.z, r.y0))).rowcount
    return removed


def remove_from_folder(tiles: Path, keep: Mapping[int, TileRange], drop: list[TileRange]) -> int:
    """Remove the tile files under ``tiles`` outside ``keep`` and inside ``drop``; how many."""
    removed = 0
    for z, z_dir in _numbered(tiles):
        r = keep.get(z)
        for x, x_dir in _numbered(z_dir):
            for y, tile in _numbered(x_dir, ".png"):
                inside = r is not None and r.x0 <= x <= r.x1 and r.y0 <= y <= r.y1
                if not inside or any(d.z == z and d.x0 <= x <= d.x1 and d.y0 <= y <= d.y1 for d in drop):
                    tile.unlink()
                    removed += 1
            _remove_if_empty(x_dir)
        _remove_if_empty(z_dir)
    return removed


def _numbered(folder: Path, suffix: str = "") -> list[tuple[int, Path]]:
    """The entries of ``folder`` named ``<n><suffix>`` (folders when no suffix), not links."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        stem = entry.name[:-len(suffix)] if suffix and entry.name.endswith(suffix) else entry.name
        if suffix and stem == entry.name or not stem.isdigit() or not stem.isascii():
            continue
        if entry.is_dir(follow_symlinks=False) if not suffix else entry.is_file(follow_symlinks=False):
            found.append((int(stem), Path(entry.path)))
    return found


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (kept tiles, or files that are not tiles)
        pass

