"""Scratch folders a worker empties between jobs, and the cheap answer to "is it still empty?".

A worker asks once or twice per job whether its output and work folders are empty; listing a
folder costs several system calls (about 8 us on ext4, most of a no-op job's time in the worker).
On Linux each folder is watched with inotify: once a listing found it empty, it stays empty
as long as no entry was created in it, moved into it, or the folder itself was moved or
removed, and each of those queues an event. The folder's own watch says it was removed only
once nothing holds it any more, and a process's current folder holds it (a job that removed its
work folder, the worker's current one, went unseen): so the folder's parent is watched too, for
entries of the folder's name removed, moved away or put there. The common answer is one look at
the event queue that finds nothing: an ``epoll_wait`` for at most one event (about 0.2 us,
against 0.3 for ``poll``, which builds its descriptor array at each call, and 1.7 for a read that
raises). Any event, a lost event queue (overflow) or a watch that could not be set up sends the
question back to a real listing. Elsewhere (no inotify, or the per-user limit reached) every
answer is a listing, as before.
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

IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_MASK_ADD = 0x20000000  # to what a watch on the same folder asks already (a parent of two folders)
#: what can make an empty folder non-empty, or make the watch stop meaning this folder
MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
#: in the folder's parent: an entry of the folder's name removed, moved away, or put there
PARENT_MASK = IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR | IN_MASK_ADD
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
        self.parents: dict[int, dict[bytes, Folder]] = {}  # a parent's watch -> its folders, by name
        #: ``queued(0, 1)``: whether events are queued ([] if not), asked without a read; only
        #: asked of a folder known empty, which needs a working watch
        self.queued: Callable[[int, int], list[tuple[int, int]]] = lambda timeout, most: []
        self._ready: select.epoll | None = None
        found = _libc_inotify()
        if found is not None:
            self._add = found[1]
            self.fd = found[0](os.O_NONBLOCK | os.O_CLOEXEC)
            if self.fd < 0:
                log.debug("no inotify (%s): scratch folders are listed after every job",
                          os.strerror(ctypes.get_errno()))
            else:
                self._ready = select.epoll()  # close-on-exec, as the inotify descriptor
                self._ready.register(self.fd, select.EPOLLIN)
                self.queued = self._ready.poll

    def add(self, folder: Folder) -> bool:
        """Watch the folder now at ``folder.path``; False if it cannot be watched."""
        if self.fd < 0:
            return False
        wd = self._add(self.fd, os.fsencode(folder.path), MASK | IN_MASK_ADD)
        parent = self._add(self.fd, os.fsencode(folder.path.parent), PARENT_MASK) if wd >= 0 else -1
        if parent < 0:
            return False
        self.folders[wd] = folder
        self.parents.setdefault(parent, {})[os.fsencode(folder.path.name)] = folder
        return True

    def poll(self) -> None:
        """Read the queued events: each folder something happened in is no longer known empty."""
        if not self.queued(0, 1):  # nothing queued, the common answer: one call that raises nothing
            return
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _, size = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size:offset + _EVENT.size + size].rstrip(b"\0")
                offset += _EVENT.size + size
                if mask & IN_Q_OVERFLOW:  # events were lost: trust no folder
                    for folder in self.folders.values():
                        folder.known_empty = False
                    continue
                folder = self.folders.get(wd)
                if folder is not None:
                    folder.known_empty = False
                children = self.parents.get(wd)
                if children is not None and name in children:  # the folder itself went, or another came
                    children[name].known_empty = False
                if mask & IN_IGNORED:  # the watch ended (folder removed): the next listing sets another
                    self.folders.pop(wd, None)
                    self.parents.pop(wd, None)

    def close(self) -> None:
        if self.fd >= 0:
            if self._ready is not None:
                self._ready.close()
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
        #: listings and remakings so far: unchanged while it stays known empty, the same folder
        #: (`farm.agent.workdir`)
        self.changes = 0
        self.queued = watch.queued  # set once, at the start of the watch
        path.mkdir(parents=True, exist_ok=True)

    def is_empty(self) -> bool:
        if self.known_empty:
            if not self.queued(0, 1):  # the common answer, asked twice a job: one call
                return True
            self.watch.poll()
            if self.known_empty:
                return True
        # a real listing, with the watch set before it: whatever is created after it is queued
        self.changes += 1
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
        if (self.known_empty and not self.queued(0, 1)) or self.is_empty():  # is_empty's common case first
            return
        self.known_empty = False
        shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)  # a new folder: its watch is set by the next listing
        self.changes += 1

    def files(self) -> list[Path]:
        """The files in it and below it, sorted; [] when it is empty."""
        if (self.known_empty and not self.queued(0, 1)) or self.is_empty():  # as in `clear`
            return []
        return sorted(p for p in self.path.rglob("*") if p.is_file())
