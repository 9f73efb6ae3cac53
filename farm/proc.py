"""Child processes that die with their parent, however the parent dies (SIGKILL included).

A render node's agent starts workers, and workers start renderers (Blender, ffmpeg). If the
agent is killed, nobody reads their results any more, yet they would go on burning the
node's cores. On Linux each child asks the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``): `die_with_parent` in a process we started ourselves (the
worker, after exec), `child_dies_with_parent` as a ``preexec_fn`` for a program we do not
control (Blender, ffmpeg). Elsewhere both do nothing, and the callers' other defences
(process groups, the worker's parent check) remain.

The kernel sends the signal when the *thread* that started the child ends, not the process:
start such children from a thread that lives as long as they should (the agent's loop thread,
the worker's main thread).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_ENV = "FARM_PARENT_PID"  # the pid a worker checks its parent against, set by the agent


@functools.cache
def _prctl() -> Any | None:
    """libc's prctl, looked up once (never in a child between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(parent_pid: int | None) -> bool:
    """Ask for SIGKILL when our parent dies; False where the system cannot do that.

    `parent_pid`: the pid the parent had when it started us. If our parent is no longer that
    process (it died before the request took hold), this process is killed at once, so no
    window is left between our start and the request.
    """
    prctl = _prctl()
    if prctl is None or prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def parent_from_env() -> int | None:
    """The parent pid the agent put in our environment (`PARENT_ENV`), if any."""
    try:
        return int(os.environ[PARENT_ENV])
    except (KeyError, ValueError):
        return None


def child_dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for `subprocess`: the child gets SIGKILL when this process dies.

    None where the system cannot do that (``preexec_fn=None`` is the default). The child
    only makes system calls (prctl, getppid, kill), looked up here before the fork.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # we died between the fork and the call: follow at once
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec
