"""Running Blender as a child that cannot outlive its job.

Blender runs in its own process group, so an interrupted job (an exception, a
cancel, a timeout raised in the worker) kills the whole group. On Linux it also
gets SIGKILL when the worker process dies, so a worker killed outright leaves no
orphan Blender burning a render node's cores.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: lines kept in memory for error messages; the whole log goes to a file
TAIL_LINES = 400


def _death_signal() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGKILL the child when its parent dies.

    The libc function is looked up here, before fork: the child only makes the call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


@dataclass
class Finished:
    returncode: int
    tail: deque[str]


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child's whole process group and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_streaming(
    cmd: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_file: Path,
    on_line: Callable[[str], None],
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> Finished:
    """Run ``cmd`` with stdout and stderr merged, feeding each line to ``on_line`` and
    writing it to ``log_file``. Any exception (including KeyboardInterrupt) kills the
    process group before it propagates."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    log.debug("running %s", subprocess.list2cmdline(cmd))
    with log_file.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_death_signal(),  # only calls prctl, looked up before the fork
        )
        try:
            if on_start is not None:
                on_start(proc)
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                out.write(raw)
                tail.append(line)
                on_line(line)
            returncode = proc.wait()
        except BaseException:
            kill_group(proc)
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
    return Finished(returncode, tail)
