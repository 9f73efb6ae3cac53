"""Start-up timeline marks, for benchmarks: off unless ``$FARM_TRACE`` names a file.

With it set, every farm process (the submitter, its agents and their workers inherit the
environment) appends one line per mark to that file: ``<unix time> <pid> <event>``. Each
line is one ``write`` on an ``O_APPEND`` descriptor, so lines from many processes do not
interleave. `bench/bench_startup.py --timeline` reads them back; with the variable unset a
mark costs one comparison. A process's own start (before Python ran any of farm) is read
from ``/proc`` by `mark_process_start`.
"""

from __future__ import annotations

import os
import time

TRACE_ENV = "FARM_TRACE"
_path = os.environ.get(TRACE_ENV) or None


def enabled() -> bool:
    """Whether marks are recorded (to skip building costly ones)."""
    return _path is not None


def mark(event: str, at: float | None = None) -> None:
    """Record ``event`` (one line of text, no newline) at ``at`` (unix time; default now)."""
    if _path is None:
        return
    line = f"{time.time() if at is None else at:.6f} {os.getpid()} {event}\n".encode()
    try:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def mark_process_start(role: str) -> None:
    """Record when this process was started (``<role> process start``), where /proc says so."""
    if _path is None:
        return
    try:
        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])  # field 22: start, in clock ticks after boot
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])  # seconds since boot, now (btime is whole seconds)
    except (OSError, ValueError, IndexError):
        return
    mark(f"{role} process start", time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK")))
