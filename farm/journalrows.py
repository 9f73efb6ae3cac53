"""The journal's job rows written as `farm.journalschema.UPSERT` writes them one at a time, at a
third of the cost (`farm.sqlrows`: a batch's rows by shape, their NULLs literal, many a statement).

The rows of one batch name distinct jobs (the batch is keyed by job), so writing them by shape
rather than in the batch's order leaves the same table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from farm.journalschema import UPSERT, Row
from farm.sqlrows import RowWriter

_HEAD, _CONFLICT = UPSERT.split("VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
assert _CONFLICT.lstrip().startswith("ON CONFLICT"), "farm.journalschema.UPSERT changed its shape"
#: lease, agent, result, cache_key, error, log, attempts, duration: the columns that may be NULL
_WRITER = RowWriter(_HEAD, _CONFLICT, 13, (3, 4, 5, 6, 7, 8, 9, 12),
                    lambda r: (r[3] is None, r[4] is None, r[5] is None, r[6] is None, r[7] is None,
                               r[8] is None, r[9] is None, r[12] is None))


def write_rows(db: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Upsert job rows (tuples of the `Row` layout, each naming a distinct job) into ``jobs``, in the
    open transaction: what ``db.executemany(UPSERT, rows)`` does. Raises `sqlite3.Error`."""
    _WRITER.write(db, rows, ordered=False)
