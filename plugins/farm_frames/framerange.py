"""Frame lists in the Flamenco style: ``"1-240"``, ``"1-10, 20, 30-40"``.

Frames travel as sorted runs ``[[first, last], ...]`` so a million-frame range stays
two numbers in every message; helpers expand, count and chunk them lazily.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Iterator

#: frame files are named ``frame_{n:06d}``, so six digits is the ceiling
MAX_FRAME = 999_999

_ITEM = re.compile(r"^(\d+)(?:\s*-\s*(\d+))?$")

Runs = list[list[int]]


class FrameRangeError(ValueError):
    """A frame list that does not parse; the message says which part and why."""


def parse_frames(text: str | int) -> Runs:
    """Parse ``"1-10, 20, 30-40"`` (or a single int) into sorted, non-overlapping runs."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise FrameRangeError(f'expected a frame list such as "1-240" or "1-10, 20", got {text!r}')
    text = str(text)
    if not text.strip():
        raise FrameRangeError('is empty; expected frames such as "1-240"')
    items = [item.strip() for item in text.split(",")]
    runs: Runs = []
    for item in items:
        if not item:
            raise FrameRangeError(f"has an empty item in {text!r} (a stray comma?)")
        found = _ITEM.match(item)
        if not found:
            raise FrameRangeError(
                f"cannot read {item!r} in {text!r}: use frame numbers (0 or more) and ranges like 1-240"
            )
        first = int(found.group(1))
        last = int(found.group(2)) if found.group(2) is not None else first
        if last < first:
            raise FrameRangeError(f"range {item!r} runs backwards; write it as {last}-{first}")
        if last > MAX_FRAME:
            raise FrameRangeError(f"frame {last} in {item!r} is above the highest frame, {MAX_FRAME}")
        runs.append([first, last])
    runs.sort()
    for (_, prev_last), (first, _) in itertools.pairwise(runs):
        if first <= prev_last:
            raise FrameRangeError(f"frame {first} is listed twice in {text!r}")
    return merge_runs(runs)


def merge_runs(runs: Iterable[list[int]]) -> Runs:
    """Join touching runs: [[1, 4], [5, 9]] -> [[1, 9]]. Runs must be sorted and disjoint."""
    merged: Runs = []
    for first, last in runs:
        if merged and first == merged[-1][1] + 1:
            merged[-1][1] = last
        else:
            merged.append([first, last])
    return merged


def frame_count(runs: Runs) -> int:
    return sum(last - first + 1 for first, last in runs)


def iter_frames(runs: Runs) -> Iterator[int]:
    for first, last in runs:
        yield from range(first, last + 1)


def runs_of(frames: Iterable[int]) -> Runs:
    """Runs of a sorted frame sequence."""
    return merge_runs([f, f] for f in frames)


def clip_runs(runs: Runs, first: int, last: int) -> Runs:
    """The part of ``runs`` from ``first`` to ``last``, both included."""
    return [[max(a, first), min(b, last)] for a, b in runs if a <= last and b >= first]


def chunk_runs(runs: Runs, size: int) -> Iterator[Runs]:
    """Split runs into consecutive chunks of ``size`` frames (the last may be shorter).

    Works run by run, so a long range is never expanded into a list.
    """
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    chunk: Runs = []
    room = size
    for first, last in runs:
        start = first
        while start <= last:
            end = min(last, start + room - 1)
            chunk.append([start, end])
            room -= end - start + 1
            start = end + 1
            if room == 0:
                yield chunk
                chunk, room = [], size
    if chunk:
        yield chunk


class FrameIndex:
    """Slices of a frame list by position (the n-th listed frame on), without expanding it."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self.starts = list(itertools.accumulate((last - first + 1 for first, last in runs), initial=0))
        self.total = self.starts[-1]

    def slice(self, start: int, count: int) -> Runs:
        """The runs of the ``count`` frames listed from position ``start`` (0-based)."""
        if start < 0 or count < 1 or start + count > self.total:
            raise ValueError(f"frames {start}..{start + count} are outside a list of {self.total}")
        out: Runs = []
        i = bisect.bisect_right(self.starts, start) - 1
        while count:
            first, last = self.runs[i]
            a = first + start - self.starts[i]
            b = min(last, a + count - 1)
            out.append([a, b])
            count -= b - a + 1
            start += b - a + 1
            i += 1
        return out


def format_runs(runs: Runs, *, sep: str = "-") -> str:
    """``[[1, 10], [20, 20]]`` -> ``"1-10,20"`` (Blender's ``-f`` wants ``sep=".."``)."""
    return ",".join(str(a) if a == b else f"{a}{sep}{b}" for a, b in runs)
