"""`farm submit --watch` as a user runs it: a real process, its stderr read as it goes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

FARM = [sys.executable, "-m", "farm"]


@contextlib.contextmanager
def watching(project: Path, err: Path) -> Iterator[Callable[..., bool]]:
    """`farm submit --watch -n 1 PROJECT`, its stderr into ``err``; yields ``said(text, times=1)``:
    whether stderr holds ``text`` that many times. Stopped with Ctrl-C after."""
    with open(err, "w") as stderr:
        proc = subprocess.Popen([*FARM, "submit", "--watch", "-n", "1", str(project)],
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        yield lambda text, times=1: err.read_text().count(text) >= times
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(120)
