"""Rows of one INSERT written as one statement per row would write them, at a third of the cost.

Python's sqlite3 module binds every parameter of every row by itself, and a None (or bytes) value
goes through its adaptation protocol first (two attribute lookups that fail: ~0.2 us each); every
row is one statement step, which lets go of the GIL and takes it again. The controller's per-job
rows (the journal's, the job logs') are mostly NULLs, so `executemany` spent 2 to 5 us a row on them.

A `RowWriter` writes rows of one shape (which of the columns that may be NULL are) in statements of
up to `SIZES[0]` rows each, the shape's NULLs written into the SQL as literals: ~1.5 us a row (and,
where a writer names them, a column's common values: a job log's first attempt, its state, its empty
log, ~13 % less again). A literal is the value bound there would be, in the row and in an upsert's
``excluded``, and a multi-row VALUES inserts its rows one after the other in order, so each row
leaves what the one-row statement leaves (`tests/test_journal_rows.py`, `tests/test_joblog_rows.py`).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

SIZES = (64, 16, 4, 1)  # rows per statement, largest first: few distinct statements for sqlite3 to cache
_chain = itertools.chain.from_iterable
BOUND = None  # a literal column's place in a shape: the rows' values there are bound, not literal

Shape = tuple[Any, ...]  # per column that may be NULL: NULL in these rows; then per literal column, its
# value in all these rows (an int, or a str from the program's own few: written into the SQL) or BOUND


class RowWriter:
    """Rows of ``width`` columns into one INSERT: ``head`` up to VALUES (its column list), ``tail``
    after the values (an ON CONFLICT clause, or ""); ``shape(row)``: per column of ``nullable``,
    whether the row has None there (a tuple of bools, made inline by the caller: it runs per row),
    then per column of ``literal``, the row's value if it is one of the few that most rows hold
    there (written into the statement, not bound: fewer parameters a row), else `BOUND`."""

    def __init__(self, head: str, tail: str, width: int, nullable: tuple[int, ...],
                 shape: Callable[[Sequence[Any]], Shape], literal: tuple[int, ...] = ()) -> None:
        self.head, self.tail, self.width, self.nullable, self.shape = head, tail, width, nullable, shape
        self.literal = literal
        self._values: dict[Shape, Callable[[Sequence[Any]], tuple[Any, ...]]] = {}
        self._statements: dict[tuple[Shape, int], str] = {}

    def write(self, db: sqlite3.Connection, rows: Sequence[Sequence[Any]], *, ordered: bool,
              shapes: Sequence[Shape] | None = None) -> None:
        """Insert ``rows`` in the open transaction. ``ordered``: in their order (runs of one shape
        at a time); else by shape (rows that name distinct records: their order changes nothing).
        ``shapes``: each row's ``shape(row)``, where the caller knows them already. Raises
        `sqlite3.Error`."""
        if shapes is None:
            shapes = list(map(self.shape, rows))
        if ordered:
            at = 0
            for shape, run in itertools.groupby(shapes):
                count = sum(1 for _ in run)
                self._write(db, shape, rows[at:at + count])
                at += count
            return
        groups: dict[Shape, list[Sequence[Any]]] = {}
        for row, shape in zip(rows, shapes, strict=True):
            group = groups.get(shape)
            if group is None:
                groups[shape] = [row]
            else:
                group.append(row)
        for shape, group in groups.items():
            self._write(db, shape, group)

    def _write(self, db: sqlite3.Connection, shape: Shape, rows: Sequence[Sequence[Any]]) -> None:
        values = self._values.get(shape)
        if values is None:
            null, fixed = self._null(shape), self._fixed(shape)
            kept = [c for c in range(self.width) if c not in null and c not in fixed]
            values = self._values[shape] = (itemgetter(*kept) if len(kept) > 1 else
                                            (lambda r: (r[kept[0]],)) if kept else (lambda r: ()))
        at = 0
        for size in SIZES:
            whole = (len(rows) - at) // size * size
            if whole:
                sql = self._statement(shape, size)
                for start in range(at, at + whole, size):
                    db.execute(sql, list(_chain(map(values, rows[start:start + size]))))
                at += whole

    def _statement(self, shape: Shape, rows: int) -> str:
        sql = self._statements.get((shape, rows))
        if sql is None:
            null, fixed = self._null(shape), self._fixed(shape)
            one = "(" + ", ".join("NULL" if c in null else fixed[c] if c in fixed else "?"
                                  for c in range(self.width)) + ")"
            sql = self._statements[shape, rows] = f"{self.head}VALUES {', '.join([one] * rows)}{self.tail}"
        return sql

    def _null(self, shape: Shape) -> set[int]:
        return {column for column, is_null in zip(self.nullable, shape, strict=False) if is_null}

    def _fixed(self, shape: Shape) -> dict[int, str]:
        """The literal columns' SQL text in these rows (column -> literal), those not `BOUND`."""
        return {column: _sql_literal(value) for column, value in zip(self.literal, shape[len(self.nullable):],
                                                                     strict=True) if value is not BOUND}


def _sql_literal(value: Any) -> str:
    """An int or str as SQL text (a str quoted, its quotes doubled); anything else is a bug: raises."""
    if value.__class__ is int:
        return str(value)
    if value.__class__ is str:
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for a {type(value).__name__}")
