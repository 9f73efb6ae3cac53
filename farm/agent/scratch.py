"""An agent's scratch folder, held for the agent's life, and the folders dead agents left behind.

An agent renders in a scratch folder (by default ``$TMPDIR/farm-agent-XXXX``) and removes it
when it stops. A killed agent cannot, so the next agent to start removes it instead. Which
folders are dead is told by a lock, not by guessing from pids: each agent holds ``flock`` on
the ``.owner`` file in its folder for as long as it lives, and the kernel lets go of it however
the agent ends. A folder whose lock can be taken belongs to no live agent; one whose lock is
held (a sibling agent of this machine) is never touched. ``.owner`` also says which process
holds it (pid and start time), for people.

Folders from agents older than owner files have none; such a folder is dead when its agent's
worker socket (``workers.sock``, bound once the agent runs) refuses connections. One with no
socket yet may be an agent starting right now, so it is left alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from farm.errors import FarmError

log = logging.getLogger(__name__)

PREFIX = "farm-agent-"
OWNER = ".owner"
SOCKET = "workers.sock"  # the agent's socket for its workers (farm.agent.pool)


@dataclass
class Scratch:
    """A scratch folder and the open, locked ``.owner`` file that marks it as ours."""

    path: Path
    lock: IO[bytes]

    def release(self, *, remove: bool = True) -> None:
        """Remove the folder (if asked), then let go of the lock."""
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)
        self.lock.close()


def claim(folder: Path | None = None) -> Scratch:
    """A scratch folder for this agent, locked for as long as the returned `Scratch` is open.

    Without `folder`: the folders dead agents left in the temp folder are removed, and a new
    one is made. With `folder`: it is taken over (emptied first) if no live agent holds it.
    Raises `FarmError` if a live agent holds `folder`, or it cannot be made.
    """
    if folder is None:
        parent = Path(tempfile.gettempdir())
        swept = sweep(parent)
        if swept:
            log.info("removed %d scratch folder(s) that dead agents left in %s", len(swept), parent)
        path = Path(tempfile.mkdtemp(prefix=PREFIX))
        return Scratch(path, _lock_new(path))
    path = Path(folder).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FarmError(f"cannot make the scratch folder {path}: {exc}") from None
    held = _try_lock(path / OWNER)
    if held is None:
        raise FarmError(f"the scratch folder {path} is in use by a live agent ({_owner_text(path)}); "
                        "give this agent its own --scratch")
    if held is False:  # nobody ever held it: a fresh folder, or one from before owner files
        return Scratch(path, _lock_new(path))
    for entry in path.iterdir():  # a dead agent's leftovers
        if entry.name != OWNER:
            _remove(entry)
    _write_owner(held)
    return Scratch(path, held)


def sweep(parent: Path) -> list[Path]:
    """Remove the ``farm-agent-*`` folders of `parent` that are ours and whose agent is dead."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_dir(follow_symlinks=False) or st.st_uid != uid:
            continue  # another user's (or not a folder): never ours to judge
        lock = _try_lock(Path(entry.path) / OWNER)
        if lock is None or (lock is False and not _abandoned(Path(entry.path) / SOCKET)):
            continue  # held by a live agent, or unmarked and not known to be dead
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            if lock:
                lock.close()
        removed.append(Path(entry.path))
    return removed


def _lock_new(folder: Path) -> IO[bytes]:
    """Make ``folder/.owner`` locked from the moment it appears: locked under a temporary name,
    then renamed into place, so no sweeper ever sees it unlocked."""
    temp = folder / f"{OWNER}.{uuid.uuid4().hex}"
    handle = open(temp, "xb")  # noqa: SIM115 (held for the agent's life)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _write_owner(handle)
    os.replace(temp, folder / OWNER)
    return handle


def _try_lock(path: Path) -> IO[bytes] | bool | None:
    """The lock file opened and locked by us; None if a live process holds it; False if there is none."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return None  # a link, or not ours to open: leave it alone
    handle = os.fdopen(fd, "r+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _abandoned(path: Path) -> bool:
    """Whether ``path`` is a Unix socket nobody listens on (connecting is refused)."""
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return True
        except OSError:  # too long a path, a timeout, no permission: not known to be dead
            return False
    return False


def _write_owner(handle: IO[bytes]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
    handle.flush()


def _owner_text(folder: Path) -> str:
    try:
        return (folder / OWNER).read_text(errors="replace").strip()[:200] or "unknown process"
    except OSError:
        return "unknown process"


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
