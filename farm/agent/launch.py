"""Starting an agent's child workers the same way wherever the agent runs, and noticing when they cannot.

A worker is ``python -P -m farm.agent.worker`` started in the agent's scratch folder: ``-P``
keeps the current folder off ``sys.path`` (a folder named ``farm`` there would shadow the
package), and PYTHONPATH entries are made absolute first, so they mean what they meant where the
agent was started. Each worker's stderr passes through to the agent's own, and its last bytes
are kept: when workers die before they are ready, that tail is the error the node reports.

A worker dies with its agent however the agent dies (`farm.proc`): it asks for SIGKILL when its
parent dies, and checks that its parent is still the agent that started it (``FARM_PARENT_PID``),
so an agent killed while a worker was starting leaves no worker waiting on its dead socket.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import IO

from farm.proc import PARENT_ENV

TAIL_BYTES = 8192  # of a worker's stderr, kept for the error report
BROKEN_AFTER = 3  # workers in a row that die before they are ready: the node is broken
RETRY_START_S = 2.0  # a broken node tries a worker again after this, doubling up to RETRY_MAX_S
RETRY_MAX_S = 60.0


def worker_command(endpoint: str, slot: int, folder: Path) -> list[str]:
    return [sys.executable, "-P", "-m", "farm.agent.worker", endpoint, str(slot), str(folder)]


#: each job's CPU share, as the agent will say with the first job: a worker may start its renderer before
THREADS_ENV = "FARM_WORKER_THREADS"


def worker_env(threads: int = 1) -> dict[str, str]:
    """The agent's environment with PYTHONPATH made absolute (workers start in another folder),
    our pid, which a worker checks its parent against when it asks to die with us, and `THREADS_ENV`."""
    env = {**os.environ, PARENT_ENV: str(os.getpid()), THREADS_ENV: str(threads)}
    if env.get("PYTHONPATH"):
        entries = [os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(entries)
    return env


class StderrTail:
    """Copies a worker's stderr to ours in a thread, keeping the last `TAIL_BYTES` of it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, name="farm-worker-stderr", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with self._stream:
            for chunk in iter(lambda: self._stream.read1(65536), b""):
                try:
                    os.write(2, chunk)
                except OSError:
                    pass
                with self._lock:
                    self._tail += chunk
                    del self._tail[:-TAIL_BYTES]

    def text(self, lines: int = 15, wait: float = 1.0) -> str:
        """The last lines written (waiting up to `wait` s for the pipe to close after an exit)."""
        self._thread.join(wait)
        with self._lock:
            data = bytes(self._tail)
        return "\n".join(data.decode("utf-8", "replace").strip().splitlines()[-lines:])


class StartWatch:
    """Counts workers that die before they are ready, and says when the node is broken or mended."""

    def __init__(self, limit: int = BROKEN_AFTER) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.broken: str | None = None
        self.retry_s = RETRY_START_S

    def died_at_start(self, code: int | None, stderr: str) -> bool:
        """Record one; True when this makes the node broken (`broken` then says why)."""
        self.in_a_row += 1
        if self.broken is not None:
            self.retry_s = min(self.retry_s * 2, RETRY_MAX_S)
            return False
        if self.in_a_row < self.limit:
            return False
        self.broken = (f"its workers die at start (exit code {code}, {self.in_a_row} in a row): "
                       f"{stderr or 'they wrote nothing to stderr'}")
        return True

    def started(self) -> bool:
        """A worker is ready; True if the node was broken until now."""
        self.in_a_row = 0
        self.retry_s = RETRY_START_S
        was, self.broken = self.broken, None
        return was is not None

    def delay(self) -> float:
        """How long to wait before starting a worker again: none until the node is broken."""
        return self.retry_s if self.broken is not None else 0.0
