"""Progress for people (a bar with done/total, rate and ETA) and the end-of-run summary."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from farm.client import Summary

BAR_WIDTH = 28


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class RateMeter:
    """Jobs per second over a sliding window, so the ETA follows the current pace."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.samples: list[tuple[float, float]] = []

    def add(self, now: float, done: float) -> float | None:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.pop(0)
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 0.3:
            return None
        return (d1 - d0) / (t1 - t0)


class ProgressBar:
    """Redraws one line on a terminal; silent elsewhere."""

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool | None = None) -> None:
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.meter = RateMeter()
        self.drawn = False

    def line(self, update: dict[str, Any], now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        done = update["done"] + update["failed"]
        position = done + update.get("partial", 0.0)  # jobs part-way count, so long jobs move the bar
        total = update.get("total")
        rate = self.meter.add(now, position)
        if total:
            fraction = min(position / total, 1.0)
            filled = int(fraction * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            eta = (total - position) / rate if rate else None
            head = f"[{bar}] {done}/{total} {fraction:4.0%}"
        else:
            eta = None
            head = f"{done} jobs"
        parts = [head, f"{rate:.1f} jobs/s" if rate else "-- jobs/s", f"ETA {format_duration(eta)}"]
        if update.get("failed"):
            parts.append(f"{update['failed']} failed")
        if update.get("reused"):
            parts.append(f"{update['reused']} reused")
        if update.get("state") == "finalizing":
            parts.append("finalizing")
        if update.get("stalled"):
            parts.append(f"waiting: {update['stalled']}")
        elif update.get("skipped"):  # others render it; these agents have another version of its plugin
            parts.append(f"not on: {'; '.join(update['skipped'])}")
        return "  ".join(parts)

    def update(self, update: dict[str, Any]) -> None:
        if not self.enabled:
            return
        text = self.line(update)
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def summary_text(summary: Summary) -> str:
    lines = [
        f"{summary.project} ({summary.media_type}): {summary.state}: {summary.done}/{summary.total} jobs done,"
        f" {summary.failed} failed"
        + (f" ({summary.done - summary.reused} rendered, {summary.reused} reused)" if summary.reused else "")
        + f" in {format_duration(summary.elapsed_s)} ({summary.elapsed_s:.1f}s)",
    ]
    if summary.error:
        lines.append(f"error: {summary.error}")
    for failure in summary.failures:
        lines.append(f"  failed {failure['job']}: {failure['error']}")
    if summary.outputs:
        lines.append("outputs:")
        lines += [f"  {path}" for path in summary.outputs]
    else:
        lines.append(f"outputs in {summary.output_dir}")
    return "\n".join(lines)
