"""Starting Blender as a child that cannot outlive its worker.

Blender stays in the worker's process group, so the agent's kill of a timed-out or
cancelled worker's group takes it too; on Linux it also gets SIGKILL when the worker
process dies, so a worker killed any other way leaves no orphan Blender burning a render
node's cores. Blender starts no processes of its own, so killing it is killing its pid.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from farm.proc import child_dies_with_parent

log = logging.getLogger(__name__)

#: lines kept in memory for error messages; the whole log goes to a file
TAIL_LINES = 400


def start_child(cmd: Sequence[str], *, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """Start ``cmd`` with a text pipe to its stdin and its stdout and stderr merged into one
    line-buffered text pipe. Raises OSError if it cannot start."""
    log.debug("starting %s", subprocess.list2cmdline(cmd))
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        cwd=cwd,
        env=env,
        # no new session: it stays in the worker's process group, which the agent kills
        preexec_fn=child_dies_with_parent(),  # SIGKILL when the worker dies, however it dies
    )


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child, reap it and close its pipes."""
    try:
        proc.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:  # a write buffered for a child that is gone
                pass
