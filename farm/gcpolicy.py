"""The cyclic garbage collector while a controller's or an agent's loop runs: young collections far apart.

With Python's default thresholds (700, 10, 10) a young collection runs every 700 tracked
objects that outlive their allocation, and every tenth one moves the survivors on. A busy
controller keeps hundreds of jobs in flight for a few milliseconds each (a lease, the job, its
parameters, a pending collate; an agent its queued `JobSpec`s), so every young collection finds
them alive and promotes them;
promoted objects bring on full collections, which walk every tracked object of the process.
With 20,000 no-op jobs a second that was 3 to 5 us of each job's controller time
(`bench/bench_dispatch.py`'s ``gc_s``, docs/benchmarks.md). With the first threshold at
`YOUNG`, a young collection runs every few thousand jobs, the jobs in flight then are a sliver of
what was allocated, and full collections become rare. Nothing is left uncollected: cycles wait
longer, and a young collection walks at most `YOUNG` objects.

The thresholds are the process's: they are raised while any controller's or agent's loop runs
in it and put back as they were when the last one ends (an embedding program gets its own back).
"""

from __future__ import annotations

import gc
import threading

YOUNG = 50_000  # the first threshold while a loop runs (Python's default: 700)

_lock = threading.Lock()
_loops = 0
_saved: tuple[int, ...] = ()


def loop_started() -> None:
    """A controller's or agent's loop begins: young collections far apart (the first raises them)."""
    global _loops, _saved
    with _lock:
        _loops += 1
        if _loops == 1:
            _saved = gc.get_threshold()
            if 0 < _saved[0] < YOUNG:  # 0: the collector is off, as its owner chose
                gc.set_threshold(YOUNG, *_saved[1:])


def loop_ended() -> None:
    """A controller's or agent's loop ended: the last one puts the thresholds back as they were."""
    global _loops
    with _lock:
        _loops -= 1
        if _loops == 0 and _saved:
            gc.set_threshold(*_saved)
