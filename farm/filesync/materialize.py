"""Give a job folder a tree's files from the cache: hard links where possible, copies otherwise.

Each file is linked (or copied) to a temporary name beside its target and renamed over
it, so a reader never sees a half-written file. Hard-linked files are read-only (they
share their inode with the cache); a job that must modify an asset copies it first.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from farm.filesync.errors import SyncError
from farm.filesync.manifest import Manifest
from farm.filesync.resolve import Resolver
from farm.filesync.sidefiles import SUFFIXES, is_sqlite, remove_stale

if TYPE_CHECKING:
    from farm.filesync.store import Store

log = logging.getLogger(__name__)

_TMP = re.compile(r"\..+\.farm-(\d+)\.tmp\Z", re.DOTALL)  # what `materialize` writes before renaming
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})  # no room where the files go
_NO_LINK = {errno.EXDEV, errno.EMLINK, errno.EPERM, errno.EACCES, errno.ENOTSUP}


Sources = dict[bytes, tuple[str, os.stat_result]]  # digest -> (cache file, its stat)


@dataclass
class MaterializeStats:
    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    pruned: int = 0


class MissingFromCache(SyncError):
    """Files of a manifest are not (or no longer) in the cache: fetch them first."""


def materialize(
    store: Store,
    manifest: Manifest,
    dest: Path,
    *,
    copy: bool = False,
    prune: bool = False,
    verify: bool = False,
    sources: Sources | None = None,
) -> MaterializeStats:
    """Make ``dest`` hold ``manifest``'s files, taken from ``store``.

    ``copy`` forces copies (writable files) instead of hard links; ``prune`` removes
    files under ``dest`` that the manifest does not list (only for folders that hold
    nothing else); ``verify`` hashes every cached file in full before using it.
    ``sources`` is the result of a `Store.check_stat` just made, to skip making it twice.
    Raises `MissingFromCache` if the cache lacks a file, `UnsafeFile` if a target would
    land outside ``dest`` (through a symlink already there). An SQLite file written over one
    there loses the old one's side files (``-wal``, ``-shm``, ``-journal``) unless the manifest
    lists them: they would corrupt it (`farm.filesync.sidefiles`).
    """
    dest.mkdir(parents=True, exist_ok=True)
    unique = manifest.unique_files()
    if verify:
        sources = None
        for entry in unique:
            store.verify(entry.digest)
    if sources is None:
        sources = store.check_stat(e.digest for e in unique)
    missing = [e.path for e in unique if e.digest not in sources]
    if missing:
        raise MissingFromCache(
            f"{len(missing)} files are not in the cache {store.root} (first: {missing[0]})"
        )
    stats = MaterializeStats()
    resolver = Resolver(dest)
    made: set[str] = set()
    sides: set[str] = set()  # SQLite side files found in the folders written to
    listed: set[str] | None = None
    for entry in manifest:
        src, src_st = sources[entry.digest]
        head, _, name = entry.path.rpartition("/")
        target = f"{resolver.folder(head)}/{name}"  # folders resolved once, refused if they lead out
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            resolver.path(entry.path, follow=False, checked=True)  # refuses a link leading out
        if st is not None:
            if (st.st_ino, st.st_dev) == (src_st.st_ino, src_st.st_dev):
                stats.unchanged += 1
                continue
            if stat.S_ISDIR(st.st_mode):
                raise SyncError(f"{entry.path}: a folder is in the way in {dest}")
        folder, _, name = target.rpartition("/")
        if folder not in made:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                if exc.errno in FULL:  # the caller says how to go on once there is room
                    raise
                raise SyncError(f"{entry.path}: cannot create its folder in {dest}: {exc.strerror}") from None
            made.add(folder)
            sweep_stale(folder, sides)
        linkable = not copy and bool(src_st.st_mode & 0o111) == entry.executable
        if any(target + suffix in sides for suffix in SUFFIXES) and is_sqlite(src):
            if listed is None:
                listed = {e.path for e in manifest}
            # before the file: a reader never pairs the new file with them
            remove_stale(target, [s for s in SUFFIXES if entry.path + s in listed])
        if linkable and st is None and _link(src, target):  # a new link appears whole: no temp name
            stats.linked += 1
            continue
        tmp = f"{folder}/.{name}.farm-{os.getpid()}.tmp"
        try:
            if linkable and _link(src, tmp):
                stats.linked += 1
            else:
                shutil.copyfile(src, tmp)
                os.chmod(tmp, entry.mode)
                os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
                stats.copied += 1
            os.replace(tmp, target)
        except BaseException:  # a full disk, Ctrl-C: no half-written temporary stays beside the outputs
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    if prune:
        stats.pruned = _prune(dest, {e.path for e in manifest})
    return stats


def sweep_stale(folder: str, sides: set[str] | None = None) -> int:
    """Remove the temporaries (``.NAME.farm-PID.tmp``) that processes now dead left in ``folder``;
    returns how many. A live process's (another sync writing here now) are left alone.
    ``sides``: gets the paths of the names that may be SQLite side files (one listing for both)."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if sides is not None and name.endswith(SUFFIXES):
            sides.add(f"{folder}/{name}")
        found = _TMP.match(name)
        if found is None or _alive(int(found[1])):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{folder}/{name}")
            removed += 1
            log.info("removed %s/%s, left by a process that ended while writing it", folder, name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's, alive
        return True
    return True


def _link(src: str, dst: str) -> bool:
    """Hard-link ``src`` as ``dst`` (replacing a stale temporary); False where links cannot be made."""
    try:
        os.link(src, dst)
    except FileExistsError:
        os.unlink(dst)
        os.link(src, dst)
    except OSError as exc:
        if exc.errno in _NO_LINK:
            log.debug("cannot hard-link %s (%s); copying", src, exc.strerror)
            return False
        raise
    return True


def _prune(dest: Path, keep: set[str]) -> int:
    removed = 0
    for folder, dirs, files in os.walk(dest, topdown=False):
        rel_folder = os.path.relpath(folder, dest).replace(os.sep, "/")
        prefix = "" if rel_folder == "." else rel_folder + "/"
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            if prefix + name not in keep:
                os.unlink(os.path.join(folder, name))
                removed += 1
        if prefix and not os.listdir(folder):
            os.rmdir(folder)
    return removed
