"""Partial files of a `farm.filesync.store.Store`: one locked session folder per live Store.

Files being assembled live in ``partial/<session>/`` (flock on its ``.lock``) until verified and
moved into the cache. A session whose owner died leaves its partial files behind: the next fetch
of the same content adopts and resumes them; stale ones (a week old), or any of them when the
cache is over its limit, are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

STALE_PARTIAL_S = 7 * 24 * 3600


class PartialSessions:
    """Mixed into `Store`, which owns ``partial_root``, ``_lock``, ``_session`` and ``_session_fd``."""

    partial_root: Path
    _lock: threading.RLock
    _session: Path | None
    _session_fd: int | None

    def session_dir(self) -> Path:
        """This Store's own folder for partial files, locked for as long as the Store is open."""
        with self._lock:
            if self._session is None:
                # made under a hidden name and renamed once locked: no other Store may see it
                # unlocked and take it for a dead session's folder
                name = f"{os.getpid()}-{secrets.token_hex(4)}"
                hidden = self.partial_root / f".new-{name}"
                hidden.mkdir(mode=0o700)
                fd = os.open(hidden / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                path = self.partial_root / name
                os.rename(hidden, path)
                self._session, self._session_fd = path, fd
            return self._session

    def adopt_partials(self, digests: Iterable[bytes]) -> int:
        """Move partial files of ``digests`` left by dead sessions into ours, so they resume."""
        wanted = {d.hex() + ".part" for d in digests}
        own = self.session_dir()
        adopted = 0
        for folder in self.partial_root.iterdir():
            with self._orphan(folder) as names:
                for name in names:
                    if name in wanted and not (own / name).exists():
                        os.replace(folder / name, own / name)
                        adopted += 1
        return adopted

    @contextlib.contextmanager
    def _orphan(self, folder: Path) -> Iterator[list[str]]:
        """The file names in a partial folder whose owner is gone (none if it is alive or ours).

        Holds the folder's lock meanwhile, and removes the folder after if no partials are left.
        """
        if folder == self._session or folder.name.startswith(".") or not folder.is_dir():
            yield []
            return
        try:
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            yield []
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live session owns it
                yield []
                return
            # another Store cleaning up at the same time may have removed the folder between our open
            # and our lock (its lock file is then unlinked): nothing is left to adopt or remove
            try:
                names = [] if os.fstat(fd).st_nlink == 0 else os.listdir(folder)
            except FileNotFoundError:
                names = []
            if not names:
                yield []
                return
            yield names
            if not any(name.endswith(".part") for name in os.listdir(folder)):
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)

    def _clean_stale_partials(self, *, older_than: float = STALE_PARTIAL_S,
                              keep: Iterable[str] = frozenset()) -> int:
        """Remove dead sessions' partial files older than ``older_than`` seconds, except the
        ``keep`` names; returns the bytes freed."""
        cutoff = time.time() - older_than
        keep = set(keep)
        freed = 0
        for folder in self.partial_root.iterdir():
            with self._orphan(folder) as names:
                for name in names:
                    path = folder / name
                    if name.endswith(".part") and name not in keep:
                        st = path.stat()
                        if st.st_mtime < cutoff:
                            path.unlink()
                            freed += st.st_blocks * 512
        return freed

    def _partial_bytes(self) -> int:
        """Disk taken by partial files of other sessions (live or dead), roughly."""
        total = 0
        for folder in self.partial_root.iterdir():
            if folder != self._session and folder.is_dir():
                with contextlib.suppress(OSError):
                    parts = [e for e in os.scandir(folder) if e.name.endswith(".part")]
                    total += sum(e.stat().st_blocks * 512 for e in parts)
        return total
