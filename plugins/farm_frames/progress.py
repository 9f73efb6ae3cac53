"""Reading Blender's render log as it runs: which frame, which sample, what was saved.

Cycles prints ``Fra:12 Mem:... | Sample 4/8``, EEVEE ``Fra:12 ... | Rendering 4 / 8 samples``,
and every frame ends with ``Saved: '/path/frame_000012.png'``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_FRAME = re.compile(r"^Fra:(-?\d+)\b")
_CYCLES_SAMPLE = re.compile(r"\|\s*Sample (\d+)/(\d+)")
_EEVEE_SAMPLE = re.compile(r"\|\s*Rendering (\d+) / (\d+) samples")
_SAVED = re.compile(r"^Saved: '(.*)'")

#: report when the fraction moved by at least this much (a line can come every millisecond)
MIN_STEP = 0.005
#: lines of Blender's log an error shows
LOG_LINES = 30


class ChunkProgress:
    """Turns log lines into a fraction of the chunk done, reported through ``report``."""

    def __init__(self, frames: int, report: Callable[[float], None]) -> None:
        self.frames = frames
        self.report = report
        self.saved: list[str] = []
        self.frame: int | None = None
        self.sample_fraction = 0.0
        self.reported = -1.0

    def feed(self, line: str) -> None:
        saved = _SAVED.match(line)
        if saved:
            self.saved.append(saved.group(1))
            self.sample_fraction = 0.0
            self._report()
            return
        found = _FRAME.match(line)
        if not found:
            return
        self.frame = int(found.group(1))
        sample = _CYCLES_SAMPLE.search(line) or _EEVEE_SAMPLE.search(line)
        if sample:
            done, total = int(sample.group(1)), int(sample.group(2))
            if total > 0:
                self.sample_fraction = min(1.0, done / total)
                self._report()

    @property
    def fraction(self) -> float:
        if self.frames <= 0:
            return 1.0
        return min(1.0, (len(self.saved) + self.sample_fraction) / self.frames)

    def _report(self) -> None:
        fraction = self.fraction
        if fraction - self.reported >= MIN_STEP or (fraction >= 1.0 > self.reported):
            self.reported = fraction
            self.report(fraction)


def log_tail(lines: Iterable[str], count: int = LOG_LINES) -> str:
    """The last ``count`` lines worth reading: Blender's per-step ``Fra:`` status lines
    are collapsed to the last one, so errors and tracebacks are not pushed out."""
    kept: list[str] = []
    for line in reversed(list(lines)):
        if line.startswith("Fra:") and kept and kept[-1].startswith("Fra:"):
            continue
        kept.append(line)
        if len(kept) >= count:
            break
    return "\n".join(reversed(kept))
