"""The job-log store writes its records many a statement, their NULLs literal (`farm.sqlrows`), and
leaves exactly what one `INSERT OR REPLACE` per record leaves: the same rows in the same order
(rowids: `JobLogStore.load` reads a run's attempts back in that order), a record that names an
attempt again replacing the earlier one, over records of every shape. Real SQLite, the store's own
schema; and a real `JobLogStore` end to end, its writer thread and all, fed by `JobLogs` a message at a
time (`notes`) and one attempt at a time (`note`) alike."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.controller import joblogstore
from farm.controller.joblogpacks import attempts_of
from farm.controller.joblogs import JobLogs
from farm.controller.joblogstore import _PUT, _PUTS, JobLogStore, _prepare
from farm.sqlrows import SIZES


def _table(tmp: Path, name: str, batches: list[list[tuple]], grouped: bool) -> list[tuple]:
    path = tmp / f"{name}.db"
    db = sqlite3.connect(path, isolation_level=None)
    _prepare(db, path)
    numbered = iter(range(1, 10**6))  # the writer numbers its rows (with the packs: `next_seq`)
    for records in batches:
        rows = [(next(numbered), *record) for record in records]
        db.execute("BEGIN IMMEDIATE")
        if grouped:
            _PUTS.write(db, rows, ordered=True)
        else:
            db.executemany(_PUT, rows)
        db.execute("COMMIT")
    found = db.execute("SELECT rowid, * FROM job_logs ORDER BY rowid").fetchall()
    db.close()
    path.unlink()
    return found


def _maybe(values):
    return st.one_of(st.none(), values)


_RECORDS = st.tuples(st.sampled_from(["r1", "r2"]), st.sampled_from(["k1", "k2", "k3", "k4"]),
                     st.integers(1, 3), _maybe(st.sampled_from(["a1", "a2"])),
                     st.sampled_from(["done", "failed", "lost"]),
                     _maybe(st.text(max_size=6)), _maybe(st.floats(0, 10)), st.text(max_size=6))


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(_RECORDS, max_size=120), min_size=1, max_size=3))
def test_any_records_written_grouped_are_those_written_one_by_one(tmp_path_factory, batches):
    tmp = tmp_path_factory.mktemp("records")
    assert _table(tmp, "grouped", batches, True) == _table(tmp, "single", batches, False)


_DROPS = st.tuples(st.sampled_from(["r1", "r2"]), st.sampled_from(["k1", "k2", "k3", "k4"]),
                   st.integers(1, 3))  # (run, key, attempt) let go


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.one_of(_RECORDS.map(lambda r: ("put", r)), _DROPS.map(lambda d: ("drop", d))),
                    max_size=150))
def test_puts_and_drops_in_one_piece_leave_what_one_statement_each_leaves(tmp_path_factory, ops):
    """Records put and attempts let go (`drop`) in one piece (`JobLogStore._settle`: each attempt's
    last write, deletes then rows) leave the rows, rowids and all, of one statement each in order."""
    tmp = tmp_path_factory.mktemp("piece")
    db = sqlite3.connect(tmp / "single.db", isolation_level=None)
    _prepare(db, tmp / "single.db")
    numbered = iter(range(1, 10**6))
    for what, op in ops:
        if what == "put":
            db.execute(_PUT, (next(numbered), *op))
        else:
            db.execute(joblogstore._DROP, op)
    single = db.execute("SELECT rowid, * FROM job_logs ORDER BY rowid").fetchall()
    db.close()
    store = JobLogStore(tmp / "piece.db")
    try:
        for what, op in ops:
            if what == "put":
                store.put(op[0], op[1], op[2:])
            else:
                store.drop(*op)
        assert store.flush() and store.failed is None
    finally:
        store.close()
    db = sqlite3.connect(tmp / "piece.db")
    assert db.execute("SELECT rowid, * FROM job_logs ORDER BY rowid").fetchall() == single
    db.close()


def test_runs_of_every_size_in_order(tmp_path):
    """Long runs of one shape (every statement size) broken by records of others, in order."""
    rows = []
    for i in range(2 * SIZES[0] + SIZES[1] + 3 * SIZES[2] + 2):
        rows.append(("r", f"k{i:04d}", 1, "a1", "done", None, 0.001 * i, ""))
        if i % 50 == 7:
            rows.append(("r", f"k{i:04d}", 2, None, "failed", "boom", None, "trace"))
        if i % 90 == 8:
            rows.append(("r", f"k{i - 1:04d}", 1, "a2", "done", None, 0.5, "again"))  # replaces one
    grouped = _table(tmp_path, "grouped", [rows], True)
    assert grouped == _table(tmp_path, "single", [rows], False)
    assert len(grouped) == len({row[:3] for row in rows}) < len(rows)


def test_the_store_reads_back_what_was_put_in_order(tmp_path):
    store = JobLogStore(tmp_path / joblogstore.FILE)
    try:
        expected = []
        for i in range(700):
            attempt = (1, f"a{i % 2}" if i % 9 else None, "done", None if i % 5 else f"err {i}",
                       None if i % 7 == 0 else round(0.01 * i, 3), "" if i % 3 else f"log {i}")
            store.put("run", f"k{i:04d}", attempt)
            expected.append((f"k{i:04d}", dict(zip(joblogstore.FIELDS, attempt, strict=True))))
            if i % 100 == 99:
                store.push()
        store.drop("run", "k0010", 1)
        expected = [e for e in expected if e[0] != "k0010"]
        assert store.flush()
        assert store.failed is None
        assert store.load("run") == expected
    finally:
        store.close()


@pytest.mark.parametrize("per_run_bytes", [12_000, 400_000])  # the oldest evicted; compacted
def test_a_message_kept_at_once_writes_what_one_by_one_writes(tmp_path, per_run_bytes):
    """`JobLogs.notes` with a store: the same records and deletes, in the same order (rowids), and the
    same attempts read back, as `note` for each; past the run's bytes and the per-job bound too."""
    import random

    draw = random.Random(3)
    messages = [[(f"k{draw.randrange(40) if draw.random() < 0.5 else f'{m}-{i}'}", f"a{i % 3}", i / 7,
                  draw.choice([None, "", "x" * draw.randrange(1, 300), "y" * 1200]))
                 for i in range(draw.randrange(1, 30))] for m in range(150)]
    found = {}
    for name in ("grouped", "single"):
        store = JobLogStore(tmp_path / f"{name}.sqlite")
        stalled = threading.Event()  # the writer held until all is kept, as below
        store._queue.put(("wake", stalled.wait, None))
        try:
            logs = JobLogs(per_job=1, log_bytes=1000, per_run_bytes=per_run_bytes, store=store, run="run")
            for entries in messages:
                if name == "grouped":
                    logs.notes("done", entries)
                else:
                    for key, agent, duration, log in entries:
                        logs.note(key, agent, "done", None, duration, log)
                store.push()
            stalled.set()
            assert store.flush() and store.failed is None
            keys = sorted({key for entries in messages for key, *_ in entries})
            found[name] = (_stored(tmp_path / f"{name}.sqlite"),
                {key: logs.attempts(key) for key in keys}, {key: logs.numbered(key) for key in keys},
                logs.bytes, logs.live, logs.evicted, list(logs._order), list(logs._order_keys))
        finally:
            stalled.set()
            store.close()
    assert found["grouped"] == found["single"]
    noted = sum(len(entries) for entries in messages)
    assert found["grouped"][5] > 0 if per_run_bytes < 100_000 else len(found["grouped"][0]) < noted


def test_a_jobs_attempts_read_back_in_every_form():
    """A first attempt kept as itself and a job's later ones, read through every reader."""
    logs = JobLogs(per_job=2, per_run_bytes=10**6)
    logs.notes("done", [("a", "x", 0.5, "log a")])
    logs.note("b", "y", "failed", "boom", 0.25, "trace")
    logs.note("b", "y", "done", None, 0.125, "")
    logs.note("b", "z", "done", None, 1.0, "again")
    assert logs.attempts("a") == [{"attempt": 1, "agent": "x", "state": "done", "error": None,
                                   "duration_s": 0.5, "log": "log a"}]
    assert (logs.numbered("a"), logs.numbered("b"), logs.numbered("c")) == (1, 3, 0)
    assert [a["attempt"] for a in logs.attempts("b")] == [2, 3]
    assert logs.last("a")["log"] == "log a" and logs.last("b")["agent"] == "z" and logs.last("c") is None
    assert logs.duration("a") == 0.5 and logs.duration("b") == 1.0 and logs.duration("c") is None
    assert logs.live == 3 and list(logs._order_keys) == ["a", "b", "b", "b"]


@pytest.mark.parametrize("per_run_bytes, backlog", [(12_000, 10**9), (10**7, 10**9), (10**7, 3_000)])
def test_one_agents_message_kept_in_c_loops_writes_what_one_by_one_writes(tmp_path, per_run_bytes, backlog):
    """`JobLogs.notes_from` (a RESULTS group's attempts, made and queued in C loops when nothing is to
    bound) with a store: the same records in the same order, the same text queued, the same attempts,
    counts and queue as `note` for each. Messages of new jobs, some repeating a job (or a job twice),
    with long logs, past the run's bytes and the store's backlog; more than a piece, and pieces of
    several messages kept either way (each piece of records without log text goes with its one shape:
    the rows say if that shape is wrong). Its plain messages go as packs (one row each), the rest as
    rows: the attempts read back in order, and by a restarted controller, are the same."""
    import random

    draw = random.Random(7)
    messages = []
    for m in range(120):
        size = draw.choice([1, 3, 40, 300]) if m % 5 else 600
        keys = [f"{m}-{i}" for i in range(size)]
        if m % 9 == 4:  # one seen before, or twice in the message
            keys[draw.randrange(size)] = draw.choice(["0-0", keys[0]])
        texts = [None, "", "x" * draw.randrange(1, 90)] + (["y" * 1200] if m % 2 else [])  # one too long
        logs = [None] * size if m % 3 else [draw.choice(texts) for _ in range(size)]
        messages.append((f"a{m % 3}", keys, [draw.random() * 10 for _ in range(size)], logs))
    found, fast = {}, 0
    for name in ("grouped", "single"):
        store = JobLogStore(tmp_path / f"{name}.sqlite", backlog_bytes=backlog)
        # the writer stalled (a stalled disk) until all is kept, so which texts pass the backlog is
        # the same both ways, however busy the machine (a writer keeping up sometimes made them differ)
        stalled = threading.Event()
        store._queue.put(("wake", stalled.wait, None))
        try:
            logs = JobLogs(per_job=2, log_bytes=1000, per_run_bytes=per_run_bytes, store=store, run="run")
            for m, (agent, keys, durations, texts) in enumerate(messages):
                if name == "grouped":
                    queued = len(logs._order)
                    logs.notes = None  # type: ignore[assignment,method-assign]  # the C loops, or else
                    try:
                        logs.notes_from("done", agent, keys, durations, texts)
                        fast += 1
                    except TypeError:  # it fell back to `notes`: by design, before anything was kept
                        assert len(logs._order) == queued
                        del logs.notes
                        logs.notes_from("done", agent, keys, durations, texts)
                else:
                    for key, duration, text in zip(keys, durations, texts, strict=True):
                        logs.note(key, agent, "done", None, duration, text)
                if m % 4 == 3:  # a turn's messages in one piece, as the loop's
                    store.push()
            stalled.set()
            assert store.flush() and store.failed is None
            keys = sorted({key for _, keys, _, _ in messages for key in keys})
            found[name] = (_stored(tmp_path / f"{name}.sqlite"),
                {key: logs.attempts(key) for key in keys}, logs.bytes, logs.live, logs.evicted,
                list(logs._order), list(logs._order_keys), store._queued_text, store.dropped)
        finally:
            stalled.set()
            store.close()
        # a restarted controller reads back what memory held, through every reader
        found[name] += (_read_back(tmp_path / f"{name}.sqlite", keys, per_job=2, log_bytes=1000,
                                   per_run_bytes=per_run_bytes),)
    assert found["grouped"] == found["single"]
    assert fast > (0 if per_run_bytes < 100_000 else 60)  # the C loops were taken
    assert found["grouped"][4] > 0 if per_run_bytes < 100_000 else found["grouped"][4] == 0
    assert found["grouped"][8] > 0 if backlog < 10**6 else found["grouped"][8] == 0


def _stored(path: Path) -> list[tuple]:
    """The file's attempts, its rows and packs read as rows, in the order they were recorded."""
    db = sqlite3.connect(path)
    try:
        return attempts_of(db, "run")
    finally:
        db.close()


def _read_back(path: Path, keys: list[str], **bounds) -> tuple:
    """What a restarted controller holds of the run: its store's readers and its `JobLogs` as loaded."""
    store = JobLogStore(path)
    try:
        again = JobLogs(store=store, run="run", **bounds)
        return (store.load("run"), {key: store.attempts("run", key) for key in keys},
                {key: again.attempts(key) for key in keys}, {key: again.numbered(key) for key in keys},
                again.bytes, again.live, list(again._order_keys))
    finally:
        store.close()
