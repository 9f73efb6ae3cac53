"""The controller's per-job path made cheaper keeps its verdicts: job keys matched in C are only
ones the full check accepts, job logs keep their bounds, a full journal batch still commits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.agent.trust import job_refusal
from farm.controller.joblogs import JobLogs
from farm.ids import BadIdentifier, check_key
from farm.journal import Journal
from farm.keycheck import _plain_key, plain_job

# the characters that matter to a key: separators, dots, dashes, spaces, controls, look-alikes
ALPHABET = "aZ09_.-/ \\\t\n\x00\u00a0\u2215\uff0e\u200b\u00e9"


def _accepted(key: str) -> bool:
    try:
        check_key(key)
    except BadIdentifier:
        return False
    return True


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_a_key_the_fast_match_takes_is_one_the_full_check_accepts(key):
    if _plain_key(key):
        assert _accepted(key)


@pytest.mark.parametrize("key", [".", "..", "a/../b", "./a", "-a", "a/-b", "/a", "a/", "a//b", " a", "a ",
                                 "a\nb", "a\\b", "\u00e9", "a" * 129, "/".join("a" * 17), "x" * 1025])
def test_keys_of_every_bad_kind_miss_the_fast_match(key):
    assert not _plain_key(key) or (len(key) > 1024 and not _accepted(key))


@pytest.mark.parametrize("key", ["0", "7/12/40", "frame-0001", "a.b_c-d", "_", "a.", "a" * 128,
                                 "/".join(["a"] * 16)])
def test_common_keys_take_the_fast_match(key):
    assert _plain_key(key) and _accepted(key)
    assert plain_job(key, {}, 3600.0) and plain_job(key, None, 1)


def test_job_logs_keep_their_bounds_per_job_and_per_run():
    logs = JobLogs(per_job=3, per_run_bytes=50_000)
    for attempt in range(5):
        logs.record("k", agent="a", state="failed", error=f"e{attempt}", duration_s=0.1, log="x" * 10)
    assert [a["attempt"] for a in logs.attempts("k")] == [3, 4, 5]
    assert logs.last("k")["error"] == "e4"
    for i in range(2000):
        logs.record(f"j{i}", agent="a", state="done", error=None, duration_s=None, log="y" * 100)
    assert logs.bytes <= 50_000 and logs.evicted > 0
    assert logs.attempts("j1999") and not logs.attempts("j0")


def test_a_batch_filled_while_the_writer_is_busy_commits_at_the_next_tick(tmp_path):
    journal = Journal(tmp_path / "j.sqlite", background=True, max_batch=10, clock=lambda: 0.0)
    journal.add_project("p", {"name": "p"}, 0, 1.0)
    for i in range(10):
        journal.job_done("p", f"a{i}", None)  # full: handed to the writer
    for i in range(10):
        journal.job_done("p", f"b{i}", None)  # full again, perhaps while the writer is still busy
    journal._wait_writer()
    assert journal.flush_due_in() in (0.0, None)  # what is left is due at once
    journal.tick()  # the interval is far off (the clock stands still): due because it is full
    journal._wait_writer()
    with Journal(tmp_path / "j.sqlite") as other:
        assert len(other.done_keys("p")) == 20
    journal.close()


@settings(max_examples=3000, deadline=None)
@given(st.fixed_dictionaries({
    "key": st.one_of(st.text(alphabet=ALPHABET, max_size=20), st.integers(), st.none()),
    "deps": st.one_of(st.none(), st.just({}), st.just([]), st.just(()), st.just(""), st.just(0),
                      st.dictionaries(st.text(alphabet=ALPHABET, max_size=5), st.none(), max_size=2)),
    "timeout": st.one_of(st.floats(allow_nan=True), st.integers(-5, 10**7), st.booleans(), st.none()),
}))
def test_a_job_the_agent_waves_through_is_one_its_full_check_accepts(job):
    if plain_job(**job):
        assert job_refusal(**job) is None
