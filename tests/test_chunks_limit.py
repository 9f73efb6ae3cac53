"""The chunk advisor's ``limit`` (a boundary jobs do not cross) and ``fixed`` (a chunk the project
wrote), without sockets: what maptiles' rows and `[maptiles] chunk` rely on."""

from __future__ import annotations

from farm.controller.chunking import AdaptiveChunks
from farm.mediatype import ChunkAdvisor, Job


def make(start: int):
    return lambda n: Job(f"u{start}+{n}", {"start": start, "n": n})


def fast(chunks: AdaptiveChunks) -> AdaptiveChunks:
    chunks.saw("a", 1, 2)
    chunks.saw("b", 1, 2)
    for agent in "abab":
        chunks.record(agent, 4, 0.04)  # 10 ms a unit: a 60 s target would take thousands
    return chunks


def test_a_limit_caps_the_job_but_the_tail_counts_the_whole_run():
    chunks = fast(AdaptiveChunks(target_s=60.0))
    assert chunks.next_job(1000, 1, make(0), limit=8).units == 8  # the row's end, not 500
    assert chunks.next_job(1000, 1, make(0)).units == 512  # no limit: 1000 / 2 slots, up the ladder
    assert chunks.next_job(6, 1, make(0), limit=8).units == 3  # the tail: 6 left over 2 slots
    assert chunks.left == 3 and chunks.last == 3


def test_a_limit_is_a_size_looked_for_and_larger_done_jobs_are_not():
    done = {"u0+5", "u0+12"}  # a row's end of 5 (not a ladder size), and a job past the limit
    chunks = fast(AdaptiveChunks(target_s=60.0, known=lambda job: job.key in done))
    job = chunks.next_job(100, 1, make(0), limit=5)
    assert (job.key, job.units) == ("u0+5", 5)
    assert chunks.next_job(100, 1, make(0), limit=10).key != "u0+12"  # never past the limit


def test_a_fixed_chunk_makes_new_jobs_at_its_size_and_finds_done_ones_at_others():
    done = {"u0+6"}
    chunks = fast(AdaptiveChunks(target_s=60.0, known=lambda job: job.key in done))
    assert chunks.next_job(100, 2, make(0), limit=16, fixed=True).key == "u0+6"  # done before: kept
    new = chunks.next_job(94, 2, make(6), limit=10, fixed=True)
    assert (new.key, new.units) == ("u6+2", 2)  # not the 47 the timing or the tail would give
    assert chunks.next_job(1, 2, make(99), limit=1, fixed=True).units == 1  # the row's end cuts it
    assert chunks.jobs_left() == 0


def test_the_base_advisor_takes_the_same_arguments():
    base = ChunkAdvisor()
    assert base.next_job(100, 4, make(0), limit=3).units == 3
    assert base.next_job(100, 4, make(0), limit=10, fixed=True).units == 4
