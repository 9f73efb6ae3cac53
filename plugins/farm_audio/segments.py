"""Splitting N samples into jobs: exact sample ranges, each read with its lead-in (and lead-out)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

#: reads start on a multiple of this many samples: some filters (ffmpeg's direct-form
#: biquads) work in pairs of samples, and rounding then depends on where pairs start;
#: every decoder's frame size (1024, 1152, 960, 4096) is a multiple of it
READ_ALIGN = 64


@dataclass(frozen=True)
class Segment:
    """One job's share of the audio, in samples at the project's sample rate.

    The job reads ``[read_start, read_end)`` of the source, runs the chain over it and
    keeps ``[start, end)`` of the result (the last segment also keeps the chain's tail
    after ``end`` when the project keeps tails).
    """

    index: int
    start: int
    end: int
    read_start: int
    read_end: int
    last: bool

    @property
    def key(self) -> str:
        return segment_key(self.index)

    @property
    def samples(self) -> int:
        return self.end - self.start

    def to_params(self) -> dict[str, int | bool]:
        return {
            "index": self.index, "start": self.start, "end": self.end,
            "read_start": self.read_start, "read_end": self.read_end, "last": self.last,
        }

    @classmethod
    def from_params(cls, params: dict[str, int | bool]) -> Segment:
        return cls(**{k: params[k] for k in ("index", "start", "end", "read_start", "read_end", "last")})


def segment_key(index: int) -> str:
    return f"segment-{index:05d}"


def count_segments(samples: int, length: int) -> int:
    return -(-samples // length)


def plan(samples: int, length: int, lead_in: int = 0, lead_out: int = 0) -> Iterator[Segment]:
    """The segments of ``samples`` samples, ``length`` each (the last may be shorter)."""
    if samples <= 0 or length <= 0:
        raise ValueError(f"cannot split {samples} samples into segments of {length}")
    total = count_segments(samples, length)
    for index in range(total):
        start = index * length
        end = min(samples, start + length)
        yield Segment(
            index=index,
            start=start,
            end=end,
            read_start=max(0, (start - lead_in) // READ_ALIGN * READ_ALIGN),
            read_end=min(samples, end + lead_out),
            last=index == total - 1,
        )
