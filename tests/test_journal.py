"""The controller's journal: round trips, batching, restart semantics, crashes, bad files."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.errors import FarmError
from farm.journal import CacheHit, FailedJob, Journal, JournalError, ProjectRecord
from farm.journalschema import SCHEMA_VERSION


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def journal(db_path: Path, clock: FakeClock) -> Iterator[Journal]:
    j = Journal(db_path, commit_interval=0.05, max_batch=1000, clock=clock)
    yield j
    j.close()


def committed(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """What another connection (another process, after a crash) would see."""
    other = sqlite3.connect(path)
    try:
        return other.execute(sql, params).fetchall()
    finally:
        other.close()


def committed_jobs(path: Path) -> int:
    return committed(path, "SELECT count(*) FROM jobs")[0][0]


# -- round trips -----------------------------------------------------------------------


def test_project_round_trip(journal: Journal) -> None:
    wire = {"media_type": "maptiles", "settings": {"zoom": [0, 3]}, "blob": b"\x00\xff", "n": 1.5}
    journal.add_project("p1", wire, priority=5, submitted_at=12.5)
    journal.add_project("p0", {"x": None}, priority=0, submitted_at=10.0)
    assert journal.project_record("p1") == ProjectRecord("p1", wire, 5, 12.5)
    assert journal.project_record("nope") is None
    assert [p.project_id for p in journal.unfinished_projects()] == ["p0", "p1"]  # oldest first

    journal.finish_project("p0", "cancelled", {"done": 0, "why": "user"})
    record = journal.project_record("p0")
    assert record is not None
    assert (record.status, record.summary) == ("cancelled", {"done": 0, "why": "user"})
    assert record.finished_at is not None
    assert [p.project_id for p in journal.unfinished_projects()] == ["p1"]


def test_project_writes_commit_at_once(journal: Journal, db_path: Path) -> None:
    journal.add_project("p", {}, 0, 1.0)
    assert committed(db_path, "SELECT project_id, status FROM projects") == [("p", None)]
    journal.finish_project("p", "done", {})
    assert committed(db_path, "SELECT status FROM projects") == [("done",)]


def test_finish_project_checks_status_and_id(journal: Journal) -> None:
    journal.add_project("p", {}, 0, 1.0)
    with pytest.raises(ValueError, match="'finished'"):
        journal.finish_project("p", "finished", {})
    with pytest.raises(KeyError, match="'ghost'"):
        journal.finish_project("ghost", "done", {})


def test_resubmitting_a_project_reopens_it_and_keeps_done_jobs(journal: Journal) -> None:
    journal.add_project("p", {"v": 1}, 0, 1.0)
    journal.job_done("p", "a", None)
    journal.finish_project("p", "failed", {"failed": 1})
    journal.add_project("p", {"v": 2}, 3, 2.0)
    assert journal.project_record("p") == ProjectRecord("p", {"v": 2}, 3, 2.0)
    assert journal.done_keys("p") == {"a"}


def test_job_round_trip(journal: Journal) -> None:
    result = {"bytes": 1234, "nested": [1, "two", {"three": 3.0}], "raw": b"\x01\x02", "none": None}
    journal.job_started("p", "tile/3/1/2", lease="L1", agent="agent-a")
    journal.job_done("p", "tile/3/1/2", result, cache_key="h1")
    journal.job_done("p", "empty", None)
    journal.job_failed("p", "bad", error="RenderError: boom", log="line 1\nline 2", attempts=3)
    journal.job_started("p", "running", lease="L2", agent="agent-b")

    assert journal.done_keys("p") == {"tile/3/1/2", "empty"}
    assert journal.result("p", "tile/3/1/2") == result
    assert journal.result("p", "empty") is None
    assert journal.is_done("p", "tile/3/1/2")
    assert not journal.is_done("p", "running") and not journal.is_done("p", "bad")
    with pytest.raises(KeyError, match="'running'"):
        journal.result("p", "running")
    assert journal.failed_jobs("p") == [FailedJob("bad", "RenderError: boom", "line 1\nline 2", 3)]
    assert journal.counts("p") == {"done": 2, "failed": 1, "reused": 0}
    assert journal.counts("other") == {"done": 0, "failed": 0, "reused": 0}
    assert journal.done_keys("other") == set()
    # lease and agent outlive the transition to done: the row still says who rendered it
    journal.flush()
    assert committed(
        Path(journal.path), "SELECT state, lease, agent FROM jobs WHERE key = 'tile/3/1/2'"
    ) == [("done", "L1", "agent-a")]


@pytest.mark.parametrize("commit_between", [False, True], ids=["one-batch", "separate-commits"])
def test_a_later_state_replaces_an_earlier_one(journal: Journal, db_path: Path, commit_between: bool) -> None:
    def step() -> None:
        if commit_between:
            journal.flush()

    journal.job_started("p", "k", "L1", "agent-a")
    step()
    journal.job_failed("p", "k", "boom", "log", 1)
    step()
    assert journal.failed_jobs("p") == [FailedJob("k", "boom", "log", 1, None, "agent-a")]  # where it ran
    journal.job_done("p", "k", 7, cache_key="c")
    step()
    assert journal.failed_jobs("p") == [] and journal.is_done("p", "k") and journal.result("p", "k") == 7
    assert journal.lookup_cache("c") == CacheHit("p", "k", 7)
    journal.job_started("p", "k", "L2", "agent-b")  # rendered again (e.g. --watch): no longer done
    step()
    assert not journal.is_done("p", "k")
    with pytest.raises(KeyError):
        journal.result("p", "k")
    assert journal.lookup_cache("c") is None
    assert journal.counts("p") == {"done": 0, "failed": 0, "reused": 0}
    journal.job_done("p", "k", 8)
    journal.flush()
    # one row; lease and agent come from the last start, attempts from the failure
    assert committed(db_path, "SELECT state, lease, agent, attempts, error FROM jobs") == [
        ("done", "L2", "agent-b", 1, None)
    ]


def test_reads_see_the_batch_without_committing_it(journal: Journal, db_path: Path) -> None:
    journal.job_done("p", "a", {"v": 1}, cache_key="h")
    journal.job_failed("p", "b", "e", "l", 2)
    assert journal.is_done("p", "a") and journal.result("p", "a") == {"v": 1}
    assert journal.done_keys("p") == {"a"}
    assert journal.counts("p") == {"done": 1, "failed": 1, "reused": 0}
    assert journal.lookup_cache("h") == CacheHit("p", "a", {"v": 1})
    journal.job_done("p", "c", None)  # after the batch went into the open transaction
    assert journal.done_keys("p") == {"a", "c"}
    assert journal.unflushed == 3
    assert committed_jobs(db_path) == 0
    journal.flush()
    assert committed_jobs(db_path) == 3


def test_cache_lookup_across_projects(journal: Journal, clock: FakeClock) -> None:
    assert journal.lookup_cache("h") is None
    journal.job_done("p1", "k1", {"v": 1}, cache_key="h")
    assert journal.lookup_cache("h") == CacheHit("p1", "k1", {"v": 1})
    journal.job_done("p2", "k9", {"v": 2}, cache_key="h")  # newest wins
    assert journal.lookup_cache("h") == CacheHit("p2", "k9", {"v": 2})
    journal.job_done("p2", "k8", {"v": 3})  # no cache key: not reusable
    assert journal.lookup_cache("k8") is None


def test_result_that_is_not_msgpackable_is_refused_at_the_call(journal: Journal) -> None:
    with pytest.raises(TypeError, match="'p'/'k' result"):
        journal.job_done("p", "k", {"when": object()})
    assert not journal.is_done("p", "k")
    assert journal.unflushed == 0
    with pytest.raises(TypeError, match="wire must be a dict"):
        journal.add_project("p", ["not", "a", "dict"], 0, 0.0)  # type: ignore[arg-type]


# -- WAL and batching ------------------------------------------------------------------


def test_wal_mode_and_schema_identity(journal: Journal, db_path: Path) -> None:
    assert committed(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert committed(db_path, "PRAGMA application_id") == [(0x4641524D,)]
    assert committed(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_writes_are_invisible_to_others_until_the_interval_passes(
    journal: Journal, db_path: Path, clock: FakeClock
) -> None:
    assert journal.flush_due_in() is None and journal.tick() is False
    journal.job_started("p", "a", "L", "ag")
    journal.job_done("p", "a", 1)
    clock.now += 0.02
    journal.job_done("p", "b", 2)
    assert journal.unflushed == 3
    # this process sees its own open batch; nobody else does
    assert journal.done_keys("p") == {"a", "b"}
    assert committed_jobs(db_path) == 0

    assert journal.tick() is False  # 20 ms old: not yet
    assert journal.flush_due_in() == pytest.approx(0.03)
    assert committed_jobs(db_path) == 0
    clock.now += 0.03
    assert journal.flush_due_in() == 0
    assert journal.tick() is True
    assert committed_jobs(db_path) == 2
    assert journal.unflushed == 0 and journal.flush_due_in() is None
    assert journal.tick(clock.now + 1) is False  # nothing left to commit


def test_tick_accepts_the_loops_own_now(journal: Journal, db_path: Path, clock: FakeClock) -> None:
    journal.job_done("p", "a", 1)
    assert journal.tick(clock.now + 0.01) is False
    assert journal.tick(clock.now + 0.05) is True
    assert committed_jobs(db_path) == 1


def test_a_full_batch_commits_without_waiting(db_path: Path, clock: FakeClock) -> None:
    with Journal(db_path, max_batch=10, clock=clock) as j:
        for i in range(9):
            j.job_done("p", f"k{i}", i)
        assert committed_jobs(db_path) == 0
        j.job_done("p", "k9", 9)
        assert committed_jobs(db_path) == 10 and j.unflushed == 0
        j.job_done("p", "k10", 10)
        assert committed_jobs(db_path) == 10
        j.flush()
        assert committed_jobs(db_path) == 11


def test_close_commits(db_path: Path, clock: FakeClock) -> None:
    j = Journal(db_path, clock=clock)
    j.job_done("p", "a", 1)
    j.close()
    j.close()  # twice is harmless
    assert committed_jobs(db_path) == 1
    with pytest.raises(JournalError, match="after close"):
        j.is_done("p", "a")


def test_rows_exist_only_for_started_or_finished_jobs(journal: Journal, db_path: Path) -> None:
    # a project of a million jobs that has touched five holds five rows
    journal.add_project("big", {"jobs": 1_000_000}, 0, 1.0)
    journal.job_started("big", "j0", "L", "a")
    journal.job_started("big", "j1", "L", "a")
    journal.job_done("big", "j1", None)
    journal.job_done("big", "j2", None)
    journal.job_failed("big", "j3", "e", "", 3)
    journal.job_started("big", "j4", "L", "a")
    journal.flush()
    assert committed(db_path, "SELECT key, state FROM jobs ORDER BY key") == [
        ("j0", "running"),
        ("j1", "done"),
        ("j2", "done"),
        ("j3", "failed"),
        ("j4", "running"),
    ]


# -- restart ---------------------------------------------------------------------------


def test_restart_semantics(db_path: Path) -> None:
    with Journal(db_path) as j:
        j.add_project("p", {"m": "synthetic"}, 1, 5.0)
        j.job_started("p", "running", "L1", "a")
        j.job_started("p", "done", "L2", "a")
        j.job_done("p", "done", {"px": 4})
        j.job_failed("p", "failed", "RenderError: no", "tail of log", 3)
    with Journal(db_path) as j:
        assert [p.project_id for p in j.unfinished_projects()] == ["p"]
        assert j.done_keys("p") == {"done"}
        assert not j.is_done("p", "running")  # back to pending
        assert j.result("p", "done") == {"px": 4}
        assert j.failed_jobs("p") == [FailedJob("failed", "RenderError: no", "tail of log", 3)]


CHILD = textwrap.dedent(
    """
    import sys
    from farm.journal import Journal

    path, mode = sys.argv[1], sys.argv[2]
    if mode == "stop":
        # N committed writes, then M un-committed ones, then wait to be killed
        j = Journal(path, max_batch=10**9)
        j.add_project("p", {"v": 1}, 0, 1.0)
        for i in range(300):
            j.job_started("p", f"k{i:06d}", "L", "a")
            j.job_done("p", f"k{i:06d}", {"i": i}, cache_key=f"c{i}")
        j.flush()
        for i in range(300, 400):
            j.job_done("p", f"k{i:06d}", {"i": i})
        j.job_started("p", "k000000", "L2", "b")  # re-leased but never committed
        assert len(j.done_keys("p")) == 399  # the read puts the batch in the open transaction
        print("ready", flush=True)
        sys.stdin.read()
    else:
        # write without end, committing every 50 jobs; killed somewhere in the middle
        j = Journal(path, max_batch=50)
        i = 0
        while True:
            j.job_done("p", f"k{i:07d}", {"i": i, "pad": "x" * 200})
            i += 1
            if i == 2000:
                print("ready", flush=True)
    """
)


def run_child_until_ready(path: Path, mode: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the child says so (or dies: "")
        assert line.strip() == "ready", f"child exited early with {proc.wait()}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]


def test_sigkill_loses_only_the_open_batch(db_path: Path) -> None:
    run_child_until_ready(db_path, "stop")
    assert committed(db_path, "PRAGMA integrity_check") == [("ok",)]
    with Journal(db_path) as j:
        assert j.done_keys("p") == {f"k{i:06d}" for i in range(300)}
        assert j.is_done("p", "k000000")  # the uncommitted re-lease is gone
        assert j.result("p", "k000299") == {"i": 299}
        assert j.lookup_cache("c7") == CacheHit("p", "k000007", {"i": 7})
        assert [p.project_id for p in j.unfinished_projects()] == ["p"]
        j.job_done("p", "after", None)  # and it is writable again
        j.flush()
        assert j.counts("p") == {"done": 301, "failed": 0, "reused": 0}


def test_sigkill_while_committing_never_corrupts(db_path: Path) -> None:
    run_child_until_ready(db_path, "endless")
    assert committed(db_path, "PRAGMA integrity_check") == [("ok",)]
    with Journal(db_path) as j:
        done = sorted(j.done_keys("p"))
    n = len(done)
    # commits land whole and in order: a prefix of the writes, in multiples of the batch
    assert n >= 2000 and n % 50 == 0
    assert done == [f"k{i:07d}" for i in range(n)]


# -- against a model -------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("started"), KEYS, st.integers(0, 9)),
        st.tuples(st.just("done"), KEYS, st.integers(0, 9)),
        st.tuples(st.just("failed"), KEYS, st.integers(1, 3)),
        st.tuples(st.just("flush"), st.just(""), st.just(0)),
        st.tuples(st.just("reopen"), st.just(""), st.just(0)),
        st.tuples(st.just("crash"), st.just(""), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(1, 4))
def test_journal_matches_a_model(ops: list[tuple[str, str, int]], max_batch: int) -> None:
    """Any sequence of writes, commits, clean reopens and crashes ends as the model says."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "j.db")
        j = Journal(path, max_batch=max_batch)
        model: dict[str, tuple[str, int]] = {}  # key -> (state, value), as of the last commit or now
        committed_model: dict[str, tuple[str, int]] = {}
        writes = 0
        for op, key, value in ops:
            if op in ("started", "done", "failed"):
                getattr(j, f"job_{op}")(
                    *{
                        "started": ("p", key, f"L{value}", "agent"),
                        "done": ("p", key, {"v": value}),
                        "failed": ("p", key, "err", "log", value),
                    }[op]
                )
                model[key] = (op, value)
                writes += 1
                if writes % max_batch == 0:
                    committed_model = dict(model)
            elif op == "flush":
                j.flush()
                committed_model, writes = dict(model), 0
            elif op == "reopen":
                j.close()
                j = Journal(path, max_batch=max_batch)
                committed_model, writes = dict(model), 0
            else:  # crash: drop the connection without committing, as SIGKILL would
                j._pending.clear()
                j._conn.close()
                j = Journal(path, max_batch=max_batch)
                model, writes = dict(committed_model), 0
            done = {k: v for k, (state, v) in model.items() if state == "done"}
            failed = {k: v for k, (state, v) in model.items() if state == "failed"}
            # the point lookups first: the other reads move the batch into the transaction
            assert all(j.is_done("p", k) == (k in done) for k in "abcd")
            assert all(j.result("p", k) == {"v": v} for k, v in done.items())
            assert j.done_keys("p") == set(done)
            assert [(f.key, f.attempts) for f in j.failed_jobs("p")] == sorted(failed.items())
            assert j.counts("p") == {"done": len(done), "failed": len(failed), "reused": 0}
        j.close()
        assert committed(path, "SELECT count(*) FROM jobs") == [(len(model),)]


# -- bad files -------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database, just some text that someone left here\n" * 100)
    with pytest.raises(FarmError, match=f"journal {path}: .*not a database") as info:
        Journal(path)
    assert isinstance(info.value, JournalError)
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was


def test_a_truncated_journal_is_refused_by_name(db_path: Path) -> None:
    with Journal(db_path) as j:
        for i in range(500):
            j.job_done("p", f"k{i}", "x" * 100)
    data = db_path.read_bytes()
    assert len(data) > 8192
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    db_path.write_bytes(data[:100] + b"\xff" * 4000)  # header survives, pages are garbage
    with pytest.raises(JournalError, match=f"journal {db_path}: .*malformed"):
        with Journal(db_path) as j2:  # the header may pass; reading the pages must not
            j2.done_keys("p")


def test_a_foreign_sqlite_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE notes (t TEXT)")
    other.commit()
    other.close()
    with pytest.raises(JournalError, match=f"journal {path}: an SQLite database, but not a farm journal"):
        Journal(path)
    assert committed(path, "PRAGMA journal_mode") == [("delete",)]  # not switched to WAL


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    Journal(db_path).close()
    other = sqlite3.connect(db_path)
    other.execute("PRAGMA user_version = 99")
    other.close()
    with pytest.raises(JournalError, match="schema version 99 is newer"):
        Journal(db_path)


def test_a_directory_at_the_path_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=f"journal {tmp_path}: cannot"):
        Journal(tmp_path)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Journal(":memory:", max_batch=0)
