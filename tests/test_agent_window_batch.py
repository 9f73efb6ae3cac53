"""An agent's window of fast jobs (its prefetch plus a job per slot: 256 + 1) goes to its worker as
one batch (`farm.agent.pool.Pool.feed`, a real worker process): the 257th job used to go alone, a
batch of one with a W_JOBS, W_RESULTS, RESULTS and JOBS message of its own in every window."""

from __future__ import annotations

import collections
from pathlib import Path

from conftest import wait_for

from farm.agent.intake import take_ready
from farm.agent.pool import EarlyWorkers
from farm.protocol import JobSpec


def test_a_window_of_fast_jobs_goes_to_its_worker_as_one_batch(tmp_path: Path) -> None:
    workers = EarlyWorkers(1, tmp_path / "scratch")
    pool = workers.pool
    slot = pool.slots[0]
    try:
        assert pool.socket is not None

        def ready() -> bool:
            if pool.socket.poll(50):
                pool.drain()  # its W_READY
            return slot.ready

        wait_for(ready, what="the worker's W_READY")
        pool.avg_job_s = 5e-6  # no-op jobs: a batch's size is MAX_BATCH
        window = [JobSpec(f"lease-{i}", f"job-{i}", "run-1", {}, None, 60.0) for i in range(257)]
        queue = collections.deque(window)
        batches: list[int] = []

        def take(count: int) -> list[JobSpec]:
            batch = take_ready(queue, {"run-1"}, count)
            if batch:
                batches.append(len(batch))
            return batch

        for turn in range(2):  # the agent's next turn gives a worker with a batch queued nothing more
            pool.feed(float(turn), take, lambda project: {})
        assert batches == [257] and not queue
        assert [job.lease for job in slot.running] == [f"lease-{i}" for i in range(257)]
    finally:
        workers.close()
