"""An MBTiles file closed while a reader has it open (a dashboard's tile preview) is still folded
into one plain file: the writer waits for the reader, and no ``-wal`` is left beside it."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from farm_maptiles.mbtiles import MBTilesWriter


class _Said(logging.Handler):
    def __init__(self, words: str) -> None:
        super().__init__(logging.DEBUG)
        self.words, self.event = words, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


def test_close_waits_for_a_reader_and_leaves_one_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "world.mbtiles"
    writer = MBTilesWriter(path)
    writer.add_tiles([(0, 0, 0, b"tile-data")])
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM tiles").fetchone() == (1,)  # a read under way

    said = _Said("another connection reads it")
    logger = logging.getLogger("farm.sqlitewal")
    logger.addHandler(said)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    errors: list[BaseException] = []

    def close() -> None:
        try:
            writer.close()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)
            said.event.set()

    closer = threading.Thread(target=close)
    try:
        closer.start()
        assert said.event.wait(60), "the writer neither waited for the reader nor finished"
        assert not errors, errors  # the old close: "database is locked" at once, the WAL left
        reader.execute("COMMIT")
        reader.close()
        closer.join(60)
        assert not closer.is_alive()
    finally:
        logger.removeHandler(said)
        logger.setLevel(old_level)
    assert not errors, errors
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert check.execute("SELECT tile_data FROM tiles").fetchone() == (b"tile-data",)
    finally:
        check.close()
