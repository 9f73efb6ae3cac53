"""Journal write throughput: batched commits against one commit per job, in the same run.

    python bench/bench_journal.py [--jobs 100000] [--baseline-jobs 5000] [--repeat 3]

Each figure is the best of --repeat runs on a fresh file (the machine is shared; the best run
is the least disturbed one). "started+done+tick" is what the controller does: job_started,
job_done, then tick() on every turn of its loop, with the default interval (50 ms) and batch
size; for short jobs start and finish share a batch and make one row write, "apart" is the
long-job case where they never do (two row writes a job).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from farm.journal import Journal

RESULT = {"bytes": 48213, "seconds": 0.0123, "outputs": ["12/2047/1362.png"]}


def done_only(j: Journal, n: int) -> None:
    for i in range(n):
        j.job_done("p", f"tile/{i}", RESULT)


def started_done_tick(j: Journal, n: int) -> None:
    clock = time.monotonic
    for i in range(n):
        key = f"tile/{i}"
        j.job_started("p", key, f"L{i}", "agent-1")
        j.job_done("p", key, RESULT, cache_key=f"h{i}")
        j.tick(clock())


def started_done_apart(j: Journal, n: int) -> None:
    """Long jobs: each job's start and finish fall in different batches (so 2 row writes a job)."""
    lag = 2 * j.max_batch
    clock = time.monotonic
    for i in range(n + lag):
        if i < n:
            j.job_started("p", f"tile/{i}", f"L{i}", "agent-1")
        if i >= lag:
            key = f"tile/{i - lag}"
            j.job_done("p", key, RESULT, cache_key=f"h{i - lag}")
        j.tick(clock())


def rate(n: int, work: Callable[[Journal, int], None], repeat: int, **options: float) -> float:
    best = 0.0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
            j = Journal(Path(tmp, "journal.db"), **options)  # type: ignore[arg-type]
            start = time.perf_counter()
            work(j, n)
            j.flush()
            elapsed = time.perf_counter() - start
            j.close()
        best = max(best, n / elapsed)
    return best


def resume_read(n: int) -> tuple[float, float]:
    """Seconds to read n done keys back after a restart, and is_done lookups per second."""
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        path = Path(tmp, "journal.db")
        with Journal(path) as j:
            done_only(j, n)
        with Journal(path) as j:
            start = time.perf_counter()
            keys = j.done_keys("p")
            read_s = time.perf_counter() - start
            assert len(keys) == n
            start = time.perf_counter()
            for i in range(0, n, 10):
                j.is_done("p", f"tile/{i}")
            lookups = (n // 10) / (time.perf_counter() - start)
    return read_s, lookups


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--baseline-jobs", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    per_job = rate(args.baseline_jobs, done_only, args.repeat, max_batch=1)
    batched = rate(args.jobs, done_only, args.repeat)
    per_job_pair = rate(args.baseline_jobs, started_done_tick, args.repeat, max_batch=1)
    batched_pair = rate(args.jobs, started_done_tick, args.repeat)
    per_job_apart = rate(args.baseline_jobs, started_done_apart, args.repeat, max_batch=1)
    batched_apart = rate(args.jobs, started_done_apart, args.repeat)
    read_s, lookups = resume_read(args.jobs)

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    print(f"job_done, one commit per job   : {per_job:>10,.0f} jobs/s  ({args.baseline_jobs:,} jobs)")
    print(f"job_done, batched commits      : {batched:>10,.0f} jobs/s  ({args.jobs:,} jobs)")
    print(f"  ratio batched / per-job      : {batched / per_job:>10.1f}x")
    print(f"started+done+tick, per-job     : {per_job_pair:>10,.0f} jobs/s")
    print(f"started+done+tick, batched     : {batched_pair:>10,.0f} jobs/s")
    print(f"  ratio batched / per-job      : {batched_pair / per_job_pair:>10.1f}x")
    print(f"started+done apart, per-job    : {per_job_apart:>10,.0f} jobs/s")
    print(f"started+done apart, batched    : {batched_apart:>10,.0f} jobs/s")
    print(f"  ratio batched / per-job      : {batched_apart / per_job_apart:>10.1f}x")
    print(f"resume: done_keys of {args.jobs:,} jobs : {read_s * 1000:>7.1f} ms")
    print(f"is_done lookups                : {lookups:>10,.0f} /s")


if __name__ == "__main__":
    main()
