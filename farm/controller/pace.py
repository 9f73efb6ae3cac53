"""The time a run could move, which its rate and ETA are measured over.

A run's rate is its work done over its time, so a run paused for 5 minutes, or waiting that long
for an agent, read 0.1 items/s and "ETA 05:00" after it went on at 2 a second. The time it
spent with nothing running while paused, or stalled (no agent can run it), is left out; its
elapsed time (``elapsed_s``) is still the wall time.
"""

from __future__ import annotations

import threading


class MovingClock:
    """Seconds a run spent idle (nothing could run), from samples of its state.

    Each snapshot of the run samples it (the loop takes one every `UPDATE_EVERY_S` for every
    running run, and STATUS and the HTTP API take more, from other threads): the time from one
    sample to the next counts as idle when the first found the run idle. A stretch is thus
    known to within a sample's interval.
    """

    def __init__(self, start: float) -> None:
        self._lock = threading.Lock()
        self._idle_s = 0.0
        self._at = start
        self._idle = False

    def idle_s(self, now: float, idle: bool) -> float:
        """Seconds idle up to `now` (monotonic), the run being `idle` from now until the next sample."""
        with self._lock:
            if now > self._at:
                if self._idle:
                    self._idle_s += now - self._at
                self._at = now
            self._idle = idle
            return self._idle_s
