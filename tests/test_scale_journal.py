"""The journal's writer thread: the loop hands a due batch over and goes on; nothing is lost or unseen."""

from __future__ import annotations

from farm.journal import Journal


def test_background_commits_are_seen_and_durable(tmp_path):
    clock = [0.0]
    journal = Journal(tmp_path / "j.sqlite", background=True, commit_interval=0.05, clock=lambda: clock[0])
    journal.add_project("p", {"name": "p"}, 0, 1.0)
    for i in range(100):
        journal.job_started("p", f"k{i}", f"l{i}", "a")
        journal.job_done("p", f"k{i}", {"i": i})
    assert journal.unflushed == 200
    clock[0] = 1.0
    assert journal.tick() is True  # handed to the writer thread
    assert journal.is_done("p", "k7") and journal.result("p", "k7") == {
        "i": 7
    }  # seen while (or after) it writes
    journal.job_done("p", "late", None)
    assert journal.counts("p") == {"done": 101, "failed": 0, "reused": 0}  # a read waits for the writer, then sees all
    journal.close()
    with Journal(tmp_path / "j.sqlite") as again:  # committed: another connection reads it all
        assert again.done_keys("p") == {f"k{i}" for i in range(100)} | {"late"}


def test_a_full_batch_goes_to_the_writer_without_waiting_for_the_interval(tmp_path):
    journal = Journal(tmp_path / "j.sqlite", background=True, max_batch=10, clock=lambda: 0.0)
    journal.add_project("p", {"name": "p"}, 0, 1.0)
    for i in range(10):
        journal.job_done("p", f"k{i}", None)
    assert journal.unflushed == 10  # in the writer's hands (or committed), not lost
    journal.flush()
    assert journal.unflushed == 0
    with Journal(tmp_path / "j.sqlite") as other:
        assert len(other.done_keys("p")) == 10
    journal.close()


def test_a_running_row_waits_one_commit_so_a_short_job_is_written_once(tmp_path):
    clock = [0.0]
    journal = Journal(tmp_path / "j.sqlite", background=True, commit_interval=0.05, clock=lambda: clock[0])
    journal.add_project("p", {"name": "p"}, 0, 1.0)
    journal.job_started("p", "short", "L1", "agent-a")
    journal.job_started("p", "long", "L2", "agent-b")
    journal.job_done("p", "before", None)
    clock[0] = 0.1
    assert journal.tick() is True
    journal._wait_writer()
    with Journal(tmp_path / "j.sqlite") as other:  # the done row went; the running ones wait
        assert other._read("SELECT key, state FROM jobs ORDER BY key").fetchall() == [("before", "done")]
    assert not journal.is_done("p", "short") and journal.unflushed == 2  # still seen, still to commit
    journal.job_done("p", "short", {"v": 1})  # ends meanwhile: one row, done, with who rendered it
    clock[0] = 0.2
    assert journal.tick() is True
    journal._wait_writer()
    with Journal(tmp_path / "j.sqlite") as other:  # held once only: the long job's running row is in now
        rows = other._read("SELECT key, state, lease, agent FROM jobs ORDER BY key").fetchall()
    assert rows == [("before", "done", None, None), ("long", "running", "L2", "agent-b"),
                    ("short", "done", "L1", "agent-a")]
    assert journal.unflushed == 0
    journal.close()
