"""Joining segment PCM on disk as it arrives, in any order, in constant memory.

Each segment is written at its sample offset into one raw PCM file; a small
side file records which ranges arrived (after their bytes are written), so a
controller that restarts with the same settings keeps what it already has.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

COPY_CHUNK = 1 << 20


class JoinError(RuntimeError):
    pass


def _copy(src: BinaryIO, dst: BinaryIO, offset: int, size: int) -> None:
    """Copy all of ``src`` to ``dst`` at ``offset``: in the kernel where it can (no copy through Python)."""
    done = 0
    try:
        while done < size:
            sent = os.copy_file_range(src.fileno(), dst.fileno(), size - done, done, offset + done)
            if sent == 0:
                raise JoinError(f"{src.name} is shorter than {size} bytes")
            done += sent
        return
    except (AttributeError, OSError) as exc:  # no copy_file_range here (old kernel, other file systems)
        unsupported = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
        if isinstance(exc, OSError) and exc.errno not in unsupported:
            raise
    src.seek(done)
    dst.seek(offset + done)
    shutil.copyfileobj(src, dst, COPY_CHUNK)


class PcmJoin:
    def __init__(self, path: Path, frame_bytes: int, fingerprint: str, size_hint: int = 0) -> None:
        self.path = path
        self.ranges_path = path.with_name(path.name + ".ranges")
        self.frame_bytes = frame_bytes
        self.fingerprint = fingerprint
        self.ranges: dict[int, int] = {}  # first sample -> samples
        self._prefix = 0  # samples known to have arrived without a gap from the start
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self._resume():
            with open(path, "wb") as f:
                f.truncate(size_hint * frame_bytes)  # sparse: reserves nothing, avoids regrowth
            self.ranges_path.write_text(fingerprint + "\n")

    def _resume(self) -> bool:
        """Reload the ranges of an earlier run with the same fingerprint."""
        if not (self.path.is_file() and self.ranges_path.is_file()):
            return False
        lines = self.ranges_path.read_text().splitlines()
        if not lines or lines[0] != self.fingerprint:
            return False
        size = self.path.stat().st_size
        for line in lines[1:]:
            try:
                start, count = (int(v) for v in line.split())
            except ValueError:  # a torn last line: that range is simply not recorded
                continue
            if (start + count) * self.frame_bytes <= size:
                self.ranges[start] = count
        log.info("resuming audio join %s with %d segments already in", self.path, len(self.ranges))
        return True

    def add(self, start: int, source: Path) -> int:
        """Write the PCM in ``source`` at sample ``start``; returns its length in samples."""
        size = source.stat().st_size
        if size % self.frame_bytes:
            raise JoinError(f"{source.name}: {size} bytes is not whole {self.frame_bytes}-byte samples")
        count = size // self.frame_bytes
        with open(source, "rb") as src, open(self.path, "r+b") as dst:
            _copy(src, dst, start * self.frame_bytes, size)
        self.ranges[start] = count
        with open(self.ranges_path, "a") as f:
            f.write(f"{start} {count}\n")
        return count

    def contiguous(self) -> int:
        """How many samples from the start have arrived without a gap."""
        while self.ranges.get(self._prefix, 0) > 0:
            self._prefix += self.ranges[self._prefix]
        return self._prefix

    def check(self, expected: list[tuple[int, int, bool]]) -> int:
        """Check each (start, samples, may_be_longer) range arrived; returns the total length.

        Only the last range may be longer than planned (the chain's tail).
        """
        problems = []
        for start, count, open_end in expected:
            got = self.ranges.get(start)
            if got is None:
                problems.append(f"samples {start}-{start + count} never arrived")
            elif got < count or (got != count and not open_end):
                problems.append(f"samples {start}-{start + count} arrived with {got} samples")
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise JoinError("; ".join(problems[:5]) + more)
        last_start = expected[-1][0]
        total = last_start + self.ranges[last_start]
        with open(self.path, "r+b") as f:
            f.truncate(total * self.frame_bytes)  # drop anything a longer earlier run left
        return total

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.ranges_path.unlink(missing_ok=True)
