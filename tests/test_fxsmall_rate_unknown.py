"""Right after agents rejoin a resumed run, nothing done since: the rate is unknown ("--"),
not "0.0 tiles/s"; once work is done it is measured, and a stall after that still reads 0."""

from __future__ import annotations

from farm.cli.progress import RateMeter


def test_no_work_done_since_the_start_is_no_rate():
    meter = RateMeter()
    assert [meter.add(t, 8533.0) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert meter.add(3.0, 8563.0) == 10.0  # 30 tiles in the 3 s since the first sample
    meter = RateMeter(window=2.0)
    meter.add(0.0, 0.0)
    meter.add(1.0, 10.0)
    assert [meter.add(t, 10.0) for t in (4.0, 5.0)] == [0.0, 0.0]  # stalled after work: 0, said
