"""Job rows written as `farm.journalschema.UPSERT` writes them one at a time, at a third of the cost.

Python's sqlite3 module binds every parameter of every row by itself, and a None (or bytes) value
goes through its adaptation protocol first (two attribute lookups that fail: ~0.2 us each); every
row is one statement step, which lets go of the GIL and takes it again. A job row has 13 columns,
most of them NULL, so `executemany(UPSERT, rows)` spent ~5 us a row, most of it binding NULLs.

`write_rows` sorts a batch's rows by shape (which of the columns that may be NULL are), writes the
NULLs of a shape into its SQL as literals and puts up to `ROWS_PER_STATEMENT` rows in one
statement: ~1.5 us a row. The statement is the same upsert (every column named, the same ON
CONFLICT clause: a literal NULL is NULL in ``excluded`` as a bound one is), so each row leaves
what `UPSERT` leaves. The rows of one batch name distinct jobs (the batch is keyed by job), so the
order in which shapes are written changes nothing.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable
from functools import lru_cache
from operator import itemgetter

from farm.journalschema import UPSERT, Row

ROWS_PER_STATEMENT = (64, 16, 4, 1)  # statement sizes, largest first: few distinct statements to cache
_NULLABLE = (3, 4, 5, 6, 7, 8, 9, 12)  # lease, agent, result, cache_key, error, log, attempts, duration
_HEAD, _CONFLICT = UPSERT.split("VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
assert _CONFLICT.lstrip().startswith("ON CONFLICT"), "farm.journalschema.UPSERT changed its shape"
_chain = itertools.chain.from_iterable

Shape = tuple[bool, ...]  # per column of _NULLABLE: NULL in these rows


def write_rows(db: sqlite3.Connection, rows: Iterable[Row]) -> None:
    """Upsert job rows (tuples of the `Row` layout, each naming a distinct job) into ``jobs``, in
    the open transaction: what ``db.executemany(UPSERT, rows)`` does. Raises `sqlite3.Error`."""
    if not isinstance(rows, list):
        rows = list(rows)
    shapes: dict[Shape, list[Row]] = {}
    for row, shape in zip(rows, [(r[3] is None, r[4] is None, r[5] is None, r[6] is None, r[7] is None,
                                  r[8] is None, r[9] is None, r[12] is None) for r in rows], strict=True):
        group = shapes.get(shape)
        if group is None:
            shapes[shape] = [row]
        else:
            group.append(row)
    for shape, group in shapes.items():
        values = _values(shape)
        at = 0
        for size in ROWS_PER_STATEMENT:
            whole = (len(group) - at) // size * size
            if whole:
                sql = _statement(shape, size)
                for start in range(at, at + whole, size):
                    db.execute(sql, list(_chain(map(values, group[start:start + size]))))
                at += whole


@lru_cache(maxsize=64)
def _values(shape: Shape) -> itemgetter:
    """The values a row of this shape binds (its columns that are not NULL), as one tuple."""
    null = {column for column, is_null in zip(_NULLABLE, shape, strict=True) if is_null}
    return itemgetter(*(column for column in range(13) if column not in null))


@lru_cache(maxsize=256)
def _statement(shape: Shape, rows: int) -> str:
    """The upsert of `rows` rows of this shape, its NULLs literal."""
    null = {column for column, is_null in zip(_NULLABLE, shape, strict=True) if is_null}
    one = "(" + ", ".join("NULL" if column in null else "?" for column in range(13)) + ")"
    return f"{_HEAD}VALUES {', '.join([one] * rows)}{_CONFLICT}"
