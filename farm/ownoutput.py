"""The files this process's own output ends up in, so a project never counts them as assets.

``farm submit . > ./run.log`` or ``farm submit --watch . | tee ./run.log`` writes into the
project folder while the run reads it: as an asset, such a log would change under the file
service (failing the fetch) and start ``--watch`` round after round. Its writes are ours, so
it is left out of the assets wherever this process lists them (the embedded controller and
the upload client run here).

Linux only: the pipe case reads ``/proc``; elsewhere only plain redirections are found.
"""

from __future__ import annotations

import os
import stat
from functools import cache

FileId = tuple[int, int]  # (st_dev, st_ino)


def file_id(path_or_fd: str | int) -> FileId | None:
    """(st_dev, st_ino) of a regular file (by path or descriptor); None for anything else."""
    try:
        st = os.stat(path_or_fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _pipe_readers_files(pipes: set[str]) -> set[FileId]:
    """Regular files open in the processes whose standard input is one of ``pipes`` (a ``tee``)."""
    found: set[FileId] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/fd/0") not in pipes:
                continue
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            if fd != "0" and (file := file_id(f"/proc/{pid}/fd/{fd}")) is not None:
                found.add(file)
    return found


@cache
def output_files() -> frozenset[FileId]:
    """(st_dev, st_ino) of the files our standard output and error go into, directly or via a pipe.

    Computed once per process: a pipeline's other programs have opened their files by the time
    farm has started.
    """
    found: set[FileId] = set()
    pipes: set[str] = set()
    for fd in (1, 2):
        file = file_id(fd)
        if file is not None:
            found.add(file)
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            pipes.add(target)
    if pipes:
        found |= _pipe_readers_files(pipes)
    return frozenset(found)
