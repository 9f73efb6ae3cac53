"""A message's plain first attempts go to the job-log file as one row, a pack
(`farm.controller.joblogpacks`), and read back as the rows one `INSERT OR REPLACE` each would have
left: the same attempts in the same order, an attempt named again read as its later one, one let go
gone; a file of schema 1 opens and gains the packs. Real SQLite, a real `JobLogStore` and its
writer thread; a second store on the same file reads as a restarted controller would."""

from __future__ import annotations

import sqlite3

from farm.controller import joblogstore
from farm.controller.joblogs import JobLogs
from farm.controller.joblogstore import JobLogStore

#: (what, run, agent, keys, durations): written as a pack, or as rows (`put_many`) for the reference
_STEPS = [
    ("put", "r", "a1", ["k1", "k2", "k3"], [0.5, 1.25, 2.0]),
    ("put", "r", "a2", ["k3", "k4"], [3.0, float("nan")]),  # k3 named again: the later one counts
    ("put", "q", "a1", ["k1"], [9.0]),  # another run, the same key
    ("drop", "r", None, ["k3"], None),  # let go: both of its packed attempts
    ("row", "r", "a3", ["k2"], [4.5]),  # k2 again, as a row
    ("put", "r", "a1", ["k5", "k6"], [0.001, 0.002]),
    ("drop", "r", None, ["k1", "k6"], None),
    ("put", "r", "a2", ["k1"], [7.0]),  # numbered 1 again (all of it was let go)
    ("drop", "r", None, ["k2"], None),
]
_KEYS = ["k1", "k2", "k3", "k4", "k5", "k6"]


def _apply(store: JobLogStore, step: tuple, packed: bool) -> None:
    what, run, agent, keys, durations = step
    if what == "drop":
        for key in keys:
            store.drop(run, key, 1)
        return
    attempts = [(1, agent, "done", None, d, "") for d in durations]
    if what == "put" and packed:
        store.put_pack(run, agent, "done", keys, attempts)
    else:
        store.put_many(run, keys, attempts)


def _read(store: JobLogStore) -> tuple:
    return ({run: store.load(run) for run in ("r", "q")},
            {(run, key): store.attempts(run, key) for run in ("r", "q") for key in _KEYS})


def test_packs_read_back_as_rows_step_by_step_and_after_a_restart(tmp_path):
    stores = {packed: JobLogStore(tmp_path / f"{packed}.sqlite") for packed in (True, False)}
    try:
        for step in _STEPS:
            for packed, store in stores.items():
                _apply(store, step, packed)
                store.push()
                assert store.flush() and store.failed is None
            assert _read(stores[True]) == _read(stores[False]), step
        packs = sqlite3.connect(tmp_path / "True.sqlite").execute("SELECT count(*) FROM job_log_packs")
        assert packs.fetchone()[0] >= 2  # packs there were (not every attempt as a row)
    finally:
        for store in stores.values():
            store.close()
    again = {packed: JobLogStore(tmp_path / f"{packed}.sqlite") for packed in (True, False)}
    try:
        assert _read(again[True]) == _read(again[False])
        assert again[True].attempts("r", "k4")[0]["duration_s"] is None  # a NaN reads as a row's NULL
        for packed, store in again.items():  # the restarted writer lets a packed attempt go
            store.drop("r", "k5", 1)
            _apply(store, ("put", "r", "a1", ["k7"], [1.0]), packed)
            assert store.flush() and store.failed is None
        assert _read(again[True]) == _read(again[False])
        assert [key for key, _ in again[True].load("r")] == ["k4", "k1", "k7"]
    finally:
        for store in again.values():
            store.close()


def test_a_schema_1_file_is_read_and_gains_the_packs(tmp_path):
    path = tmp_path / joblogstore.FILE
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA application_id = {joblogstore.APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    db.execute(joblogstore._SCHEMA)  # schema 1's one table, unchanged in 2
    db.execute("INSERT INTO job_logs VALUES ('r', 'old', 1, 'a', 'failed', 'boom', 0.5, 'trace')")
    db.execute("INSERT INTO job_logs VALUES ('r', 'old', 2, 'a', 'done', NULL, 0.25, '')")
    db.close()
    store = JobLogStore(path)
    try:
        logs = JobLogs(store=store, run="r")
        assert [a["attempt"] for a in logs.attempts("old")] == [1, 2]
        logs.notes_from("done", "b", ["new1", "new2"], [1.0, 2.0], [None, None])
        assert store.flush() and store.failed is None
        assert [key for key, _ in store.load("r")] == ["old", "old", "new1", "new2"]
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == joblogstore.SCHEMA_VERSION == 2
    assert db.execute("SELECT count(*) FROM job_log_packs").fetchone()[0] == 1
    db.close()


def test_messages_with_a_newline_in_a_key_or_an_int_duration_go_as_rows(tmp_path):
    """Not packable (`joblogpacks.packable`): written a row each, read back the same."""
    store = JobLogStore(tmp_path / joblogstore.FILE)
    try:
        store.put_pack("r", "a", "done", ["x\ny", "z"], [(1, "a", "done", None, 0.5, "")] * 2)
        store.put_pack("r", "a", "done", ["w"], [(1, "a", "done", None, 2, "")])
        assert store.flush() and store.failed is None
        found = [(key, e["duration_s"]) for key, e in store.load("r")]
        assert found == [("x\ny", 0.5), ("z", 0.5), ("w", 2.0)]
        db = sqlite3.connect(tmp_path / joblogstore.FILE)
        assert db.execute("SELECT count(*) FROM job_log_packs").fetchone()[0] == 0
        db.close()
    finally:
        store.close()
