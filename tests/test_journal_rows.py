"""The journal's job rows written in multi-row statements with literal NULLs (`farm.journalrows`,
`farm.sqlrows`) leave exactly what `executemany(UPSERT, rows)` leaves, row by row: over rows of
every shape (each column that may be NULL NULL or not), in batches whose sizes use every statement
size, on top of rows already in the table (so the ON CONFLICT update runs: lease, agent and
attempts kept where the new row has none). Real SQLite, the journal's own schema; and a real
`Journal` end to end."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from farm.journal import Journal
from farm.journalrows import write_rows
from farm.journalschema import UPSERT, prepare
from farm.sqlrows import SIZES


def _table(tmp: Path, name: str, before: list[tuple], batches: list[list[tuple]],
           grouped: bool) -> list[tuple]:
    path = tmp / f"{name}.db"
    db = sqlite3.connect(path, isolation_level=None)
    prepare(db, path)
    for rows in [before, *batches]:
        db.execute("BEGIN IMMEDIATE")
        if grouped:
            write_rows(db, rows)
        else:
            db.executemany(UPSERT, rows)
        db.execute("COMMIT")
    found = db.execute("SELECT * FROM jobs ORDER BY project_id, key").fetchall()
    db.close()
    path.unlink()
    return found


def _row(project: str, key: str, state: str, lease, agent, result, cache, error, log, attempts, at: float,
         reused: int, duration) -> tuple:
    return (project, key, state, lease, agent, result, cache, error, log, attempts, at, reused, duration)


def _maybe(values):
    return st.one_of(st.none(), values)


_ROWS = st.builds(
    _row, st.sampled_from(["p1", "p2"]), st.integers(0, 40).map(lambda i: f"job-{i:03d}"),
    st.sampled_from(["running", "done", "failed"]), _maybe(st.text(max_size=8)), _maybe(st.text(max_size=8)),
    _maybe(st.binary(max_size=8)), _maybe(st.text(max_size=8)), _maybe(st.text(max_size=8)),
    _maybe(st.text(max_size=8)), _maybe(st.integers(0, 9)), st.floats(0, 1e9), st.integers(0, 1),
    _maybe(st.floats(0, 100)))


def _distinct(rows: list[tuple]) -> list[tuple]:
    """One row per job, as a journal batch holds them (keyed by job)."""
    return list({(r[0], r[1]): r for r in rows}.values())


@settings(max_examples=60, deadline=None)
@given(before=st.lists(_ROWS, max_size=30).map(_distinct),
       batches=st.lists(st.lists(_ROWS, max_size=60).map(_distinct), min_size=1, max_size=3))
def test_any_rows_written_grouped_are_those_written_one_by_one(tmp_path_factory, before, batches):
    tmp = tmp_path_factory.mktemp("rows")
    assert _table(tmp, "grouped", before, batches, True) == _table(tmp, "single", before, batches, False)


def test_a_batch_of_every_statement_size_and_shape(tmp_path):
    """The common shapes in numbers that use each statement size (64, 16, 4, 1) and leave a rest."""
    many = 2 * SIZES[0] + SIZES[1] + 2 * SIZES[2] + 3
    before = [_row("p", f"j{i:04d}", "running", f"L{i}", "a1", None, None, None, None, None, 1.0, 0, None)
              for i in range(0, many, 3)]  # every third job has a committed running row
    batch = [_row("p", f"j{i:04d}", "done", None if i % 2 else f"L{i}", None if i % 2 else "a2",
                  None if i % 5 else b"\x81\xa1r\x01", "ck" if i % 7 == 0 else None, None, None,
                  None if i % 11 else 2, 2.0 + i, int(i % 13 == 0), None) for i in range(many)]
    batch += [_row("p", f"f{i:04d}", "failed", None, None, None, None, f"boom {i}", "trace", 3, 3.0, 0, 0.5)
              for i in range(SIZES[1] + 1)]
    grouped = _table(tmp_path, "grouped", before, [batch], True)
    assert grouped == _table(tmp_path, "single", before, [batch], False)
    assert len(grouped) == many + SIZES[1] + 1
    kept = {key: (lease, agent) for _, key, _, lease, agent, *_ in grouped}
    assert kept["j0003"] == ("L3", "a1")  # a done row without a lease keeps the running row's


def test_a_journal_reads_back_what_it_wrote(tmp_path):
    """End to end through `Journal`: started, done in the same batch and in later ones, failed."""
    journal = Journal(tmp_path / "j.db", background=True, max_batch=50)
    for i in range(300):
        journal.job_started("p", f"k{i:03d}", f"L{i}", f"a{i % 2}")
        if i >= 2:
            journal.job_done("p", f"k{i - 2:03d}", {"i": i - 2} if i % 3 else None)
        if i % 40 == 0:
            journal.tick(float("inf"))
    journal.job_failed("p", "k299", "boom", "log", 3, 0.25)
    journal.jobs_done("p", ["k298"], ["last"])
    journal.flush()
    assert journal.counts("p") == {"done": 299, "failed": 1, "reused": 0}
    assert journal.result("p", "k298") == "last" and journal.result("p", "k005") == {"i": 5}
    assert journal.result("p", "k004") is None
    journal.close()
    db = sqlite3.connect(tmp_path / "j.db")
    agents = dict(db.execute("SELECT key, agent FROM jobs"))
    db.close()
    assert agents == {f"k{i:03d}": f"a{i % 2}" for i in range(300)}
