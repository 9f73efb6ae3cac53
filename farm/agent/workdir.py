"""A worker's current folder: its work folder at every job's start, without a `chdir` per job.

A job's current folder is its work folder (`RenderContext.work_dir`); plugins rely on it. A
``chdir`` before every job cost ~0.8 us of a no-op job's ~6 in its worker (the kernel walks the
path each time). The worker's current folder can only stop being its work folder if something
in the process changes directory, or if the folder there is no longer the one it entered
(removed, moved, emptied by remaking it). So a worker counts the calls to `os.chdir` and
`os.fchdir` (`count_chdirs`, in the worker process only: every Python caller, `contextlib.chdir`
included, goes through them), and the work folder counts its changes (`Folder.changes`: each
real listing and each remaking; a folder known empty through its inotify watch has none). The
worker enters the folder again whenever either count moved since it last did (`CurrentFolder`).

Not seen: a C library that calls ``chdir(2)`` itself, bypassing `os`. No renderer farm runs in
its worker process does (Blender and ffmpeg run as processes of their own).
"""

from __future__ import annotations

import functools
import os
import posix
from collections.abc import Callable
from typing import Any

from farm.agent.emptydir import Folder

_chdirs = 0  # calls to os.chdir and os.fchdir since `count_chdirs`


def _counted(change: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(change)
    def counted(*args: Any, **kwargs: Any) -> None:
        global _chdirs
        _chdirs += 1  # before the call: one that raises may still have moved nothing, or something
        change(*args, **kwargs)

    counted.__wrapped_chdir__ = True  # type: ignore[attr-defined]
    return counted


def count_chdirs() -> None:
    """Count every later `os.chdir` and `os.fchdir` of this process (also reached as ``posix.*``).
    For a worker process: call it before any plugin is imported (one that did ``from os import
    chdir`` earlier would hold the uncounted function). A second call does nothing."""
    for module in (os, posix):
        for name in ("chdir", "fchdir"):
            change = getattr(module, name)
            if not getattr(change, "__wrapped_chdir__", False):
                setattr(module, name, _counted(change))


class CurrentFolder:
    """The worker's current folder kept at ``folder``'s path (see the module docstring)."""

    def __init__(self, folder: Folder) -> None:
        count_chdirs()
        self.folder = folder
        self.path = str(folder.path)  # no Path to convert at each entry
        self.chdirs = -1  # the counts when we last entered it; -1: never
        self.changes = -1

    def enter(self) -> None:
        """Make the work folder the current one, unless it is so for sure (the common case: two
        compares). Raises OSError as `os.chdir` does."""
        if _chdirs != self.chdirs or self.folder.changes != self.changes:
            os.chdir(self.path)
            self.chdirs, self.changes = _chdirs, self.folder.changes
