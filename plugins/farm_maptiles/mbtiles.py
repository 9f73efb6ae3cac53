"""An MBTiles 1.3 writer (https://github.com/mapbox/mbtiles-spec/blob/master/1.3/spec.md).

Tiles go in as XYZ and are stored with TMS rows. Writes are INSERT OR REPLACE, so a
re-run or a resumed run over an existing file just overwrites what it renders again.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from farm.outputgone import OutputRemoved
from farm.sqlitewal import leave_wal, switch_to_wal
from farm_maptiles.tilemath import tms_row

_SCHEMA = """
CREATE TABLE IF NOT EXISTS metadata (name TEXT, value TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS metadata_name ON metadata (name);
CREATE TABLE IF NOT EXISTS tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS tile_index ON tiles (zoom_level, tile_column, tile_row);
"""


class MBTilesWriter:
    """One open MBTiles file. `add_tiles` commits per call: one transaction per collated job,
    so a job the controller counts as collated is on disk even if the controller dies next.

    The controller may collate and finalize on different threads (one at a time), so the
    connection is not tied to its thread and a lock keeps calls from overlapping.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():  # SQLite would follow it (the run is refused before: farm.linkcheck)
            raise OSError(errno.ELOOP, "an MBTiles file that is a symlink is not written through", str(path))
        self.path = path
        self.folder = path.parent.stat()  # to tell the folder removed (and made again) from the file
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.closed = False
        # WAL while writing (cheap commits); switched back on close so the file is one plain file.
        switch_to_wal(self.db, path)
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.db.commit()
        # the file written: one removed (or replaced) under the open connection is told from a full disk
        self.file = path.stat()

    def add_tiles(self, tiles: Iterable[tuple[int, int, int, bytes]]) -> int:
        """Store XYZ tiles (z, x, y, data) in one transaction; returns how many."""
        rows = [(z, x, tms_row(z, y), sqlite3.Binary(data)) for z, x, y, data in tiles]
        with self.lock, self.named(), self.db:
            # SQLite goes on committing into the WAL of a file removed under it, saying nothing till
            # a checkpoint: so tiles collated after the removal would be lost without a word
            if (gone := self.removed(None)) is not None:
                raise gone
            self.db.executemany(
                "INSERT OR REPLACE INTO tiles (zoom_level, tile_column, tile_row, tile_data)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def set_metadata(self, values: Mapping[str, str]) -> None:
        with self.lock, self.named(), self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO metadata (name, value) VALUES (?, ?)",
                [(k, str(v)) for k, v in values.items()],
            )

    def close(self) -> None:
        """Fold the WAL into the file and close it (its ``-wal`` and ``-shm`` go), waiting for a
        reader that has it open (`farm.sqlitewal.leave_wal`). The connection is closed also when
        that fails (a full disk): SQLite folds the WAL in on its last close if it can."""
        with self.lock, self.named():
            if self.closed:
                return
            self.closed = True
            try:
                leave_wal(self.db, self.path)
            finally:
                self.db.close()

    def removed(self, why: str | None) -> OutputRemoved | None:
        """The error to raise when the file, or its folder, is not the one opened (removed, replaced)."""
        return OutputRemoved.check(self.path, self.path.parent, self.folder, why, self.file,
                                   "the MBTiles file ")

    @contextlib.contextmanager
    def named(self) -> Iterator[None]:
        """SQLite's error for a file deleted while open names no file and no cause ("attempt to write
        a readonly database", which reads like a disk's fault): say which file, and that it (or its
        folder) was removed or replaced. The SQLite error stays the cause."""
        try:
            yield
        except sqlite3.Error as exc:
            gone = self.removed(str(exc))
            if gone is None:
                raise
            raise gone from exc
