"""The rate and ETA beside `farm submit`'s bar are never negative: a drop in the done units (a
restarted controller drops its jobs' partial progress) starts the rate window again, and a
rate that shows as 0.0 gives no ETA."""

from __future__ import annotations

import pytest

from farm.cli.progress import ProgressBar, RateMeter, progress_text


def frames(done: int, value: float, **extra: object) -> dict:
    """A blender run's UPDATE: 24 jobs of 2 frames, `value` frames done or part-way."""
    return {"project": "tt", "state": "running", "total": 24, "done": done, "failed": 0, "reused": 0,
            "partial": 0.0, "stalled": None,
            "units": {"name": "frames", "done": float(int(value)), "failed": 0, "partial": value - int(value),
                      "total": 48}, **extra}


@pytest.mark.parametrize("samples, drop", [
    ([(0.0, 10.0), (5.0, 31.5), (6.0, 30.0)], 2),  # the restart's drop: 1.5 frames of partial progress
    ([(0.0, 10.0), (5.0, 40.0), (6.0, 0.0), (9.0, 0.0)], 2),  # a drop to nothing (a run started over)
    ([(0.0, 5.0), (1.0, 5.0), (2.0, 4.9), (2.1, 4.9), (4.0, 5.5)], 2),  # a small drop after a standstill
])
def test_a_drop_in_done_units_gives_no_rate_then_never_a_negative_one(samples, drop):
    meter = RateMeter()
    rates = [meter.add(now, done) for now, done in samples]
    assert rates[drop] is None, rates  # the window starts again at the drop
    assert all(rate is None or rate >= 0 for rate in rates), rates


def test_after_a_drop_the_rate_follows_the_new_pace():
    meter = RateMeter()
    for now, done in [(0.0, 0.0), (5.0, 31.5), (6.0, 30.0), (6.5, 30.5)]:
        rate = meter.add(now, done)
    assert rate == pytest.approx(1.0)  # 0.5 frames in 0.5 s since the drop, not (30.5 - 0) / 6.5


def test_the_line_after_a_controller_restart_shows_no_negative_rate_or_eta():
    bar = ProgressBar(enabled=False)
    bar.line(frames(14, 28.0), now=100.0)
    bar.line(frames(15, 31.5), now=105.0)
    text = bar.line(frames(15, 30.0), now=106.0)  # restarted: the in-flight jobs' partial is gone
    assert text == "frames 30/48 · jobs 15/24 · -- frames/s · ETA --:--", text
    text = bar.line(frames(16, 32.0), now=108.0)
    assert text == "frames 32/48 · jobs 16/24 · 1.0 frames/s · ETA 00:16", text
    assert "-" not in text.split("·")[2], text


@pytest.mark.parametrize("rate, shown, eta", [
    (0.04, "0.0 frames/s", "ETA --:--"),  # 1:02:59 from 0.004 frames/s before: not worth saying
    (0.0, "0.0 frames/s", "ETA --:--"),
    (-0.02, "-- frames/s", "ETA --:--"),  # never negative, whoever measured it
    (-3.0, "-- frames/s", "ETA --:--"),
    (None, "-- frames/s", "ETA --:--"),
    (0.05, "0.1 frames/s", "ETA 05:20"),  # 16 frames at 0.05/s: 320 s
])
def test_an_eta_comes_only_from_a_rate_that_shows_above_zero(rate, shown, eta):
    text = progress_text(frames(16, 32.0), rate)
    assert f" · {shown} · {eta}" in text, text
