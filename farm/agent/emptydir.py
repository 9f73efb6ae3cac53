"""Scratch folders a worker empties between jobs, and the cheap answer to "is it still empty?".

A worker asks twice per job whether its output and work folders are empty; listing a folder
costs several system calls (about 8 us on ext4, most of a no-op job's time in the worker).
On Linux each folder is watched with inotify: once a listing found it empty, it stays empty
as long as no entry was created in it, moved into it, or the folder itself was moved or
removed, and each of those queues an event. So the common answer is one `poll` of the event
queue that finds nothing (about 0.6 us, against 1.7 us for a non-blocking read that raises).
Any event, a lost event queue (overflow) or a watch that could not be set up sends the
question back to a real listing. Elsewhere (no inotify, or
the per-user limit reached) every answer is a listing, as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
#: what can make an empty folder non-empty, or make the watch stop meaning this folder
MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name


def _libc_inotify() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
    add.argtypes, add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
    return init, add


class Watch:
    """One inotify instance for all of a worker's folders (instances are limited per user)."""

    def __init__(self) -> None:
        self.fd = -1
        self.folders: dict[int, Folder] = {}  # watch descriptor -> its folder
        #: ``queued(0)``: whether events are queued ([] if not), asked without a read; only asked
        #: of a folder known empty, which needs a working watch
        self.queued: Callable[[int], list[tuple[int, int]]] = lambda timeout: []
        found = _libc_inotify()
        if found is not None:
            self._add = found[1]
            self.fd = found[0](os.O_NONBLOCK | os.O_CLOEXEC)
            if self.fd < 0:
                log.debug("no inotify (%s): scratch folders are listed after every job",
                          os.strerror(ctypes.get_errno()))
            else:
                ready = select.poll()
                ready.register(self.fd, select.POLLIN)
                self.queued = ready.poll

    def add(self, folder: Folder) -> bool:
        """Watch the folder now at ``folder.path``; False if it cannot be watched."""
        if self.fd < 0:
            return False
        wd = self._add(self.fd, os.fsencode(folder.path), MASK)
        if wd < 0:
            return False
        self.folders[wd] = folder
        return True

    def poll(self) -> None:
        """Read the queued events: each folder something happened in is no longer known empty."""
        if not self.queued(0):  # nothing queued, the common answer: one call that raises nothing
            return
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _, size = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + size
                if mask & IN_Q_OVERFLOW:  # events were lost: trust no folder
                    for folder in self.folders.values():
                        folder.known_empty = False
                    continue
                folder = self.folders.get(wd)
                if folder is not None:
                    folder.known_empty = False
                if mask & IN_IGNORED:  # the watch ended (folder removed): the next listing sets another
                    self.folders.pop(wd, None)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            for folder in self.folders.values():  # nothing answers for them now
                folder.known_empty = False


class Folder:
    """A scratch folder (created if missing) that is emptied between jobs; see the module docstring."""

    def __init__(self, path: Path, watch: Watch) -> None:
        self.path = path
        self.watch = watch
        self.known_empty = False  # a listing found it empty, and no event came since
        path.mkdir(parents=True, exist_ok=True)

    def is_empty(self) -> bool:
        if self.known_empty:
            if not self.watch.queued(0):  # the common answer, asked twice a job: one call
                return True
            self.watch.poll()
            if self.known_empty:
                return True
        # a real listing, with the watch set before it: whatever is created after it is queued
        watched = self.watch.add(self)
        if watched:
            self.watch.poll()  # what happened before this listing is answered by it
        try:
            empty = not os.listdir(self.path)
        except FileNotFoundError:  # a job removed the folder itself: a new one, watched
            self.path.mkdir(parents=True, exist_ok=True)
            return self.is_empty()
        self.known_empty = empty and watched
        return empty

    def clear(self) -> None:
        """Remove everything in the folder (the folder itself is made again)."""
        if self.is_empty():
            return
        self.known_empty = False
        shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)  # a new folder: its watch is set by the next listing

    def files(self) -> list[Path]:
        """The files in it and below it, sorted; [] when it is empty."""
        if self.is_empty():
            return []
        return sorted(p for p in self.path.rglob("*") if p.is_file())
