"""Scan a tree into a `Manifest`, refusing anything that is not a plain file inside the root."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from farm.filesync.errors import ManifestError, SyncError, UnsafeFile
from farm.filesync.hashcache import HashCache, now_ns
from farm.filesync.hashing import block_size_for, hash_fd
from farm.filesync.limits import DEFAULT_LIMITS, Limits
from farm.filesync.manifest import FileEntry, Manifest, check_path, regular_mode
from farm.filesync.resolve import Resolver
from farm.paths import UnsafePath, safe_relpath
from farm.safeopen import SymlinkRefused, open_beneath, open_dir

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC  # NONBLOCK: a fifo never hangs us


def build_manifest(
    root: Path | str,
    paths: Iterable[str] | None = None,
    *,
    hash_cache: HashCache | None = None,
    limits: Limits = DEFAULT_LIMITS,
    deadline: float | None = None,
) -> Manifest:
    """Hash the files of ``root`` (all of them, or the relative ``paths`` given) into a manifest.

    Symlinks are followed only while they stay inside ``root``; a symlink leading out,
    a device file, socket or fifo raises `UnsafeFile` naming the path. Files are opened
    beneath a descriptor of ``root`` with no symlink on the way (in-tree links resolved
    first), so a folder swapped for a link meanwhile is refused, not followed. Files whose
    size, mtime and inode match ``hash_cache`` are not read again. The count and total
    size are checked against ``limits`` before any byte is hashed; past ``deadline``
    (`time.monotonic`), between files, raises `ManifestError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise SyncError(f"cannot scan {root}: not a folder")
    resolver = Resolver(root)
    rels = sorted(set(_checked(p) for p in paths)) if paths is not None else list(walk_files(root))
    if len(rels) > limits.max_files:
        raise ManifestError(f"{root} holds {len(rels)} files, more than the limit of {limits.max_files}")
    _check_total(root, resolver, rels, limits)
    try:
        root_fd = open_dir(resolver.root)
    except (OSError, UnsafePath) as exc:
        raise SyncError(f"cannot scan {root}: {exc}") from None
    entries = []
    total = 0
    try:
        for rel in rels:
            if deadline is not None and time.monotonic() > deadline:
                raise ManifestError(f"{root}: hashing its files took too long (stopped at {rel})")
            entry = _scan_file(root, resolver, root_fd, rel, hash_cache, limits)
            total += entry.size
            if total > limits.max_total_size:
                raise ManifestError(f"{root} holds more than the limit of {limits.max_total_size} bytes")
            entries.append(entry)
    finally:
        os.close(root_fd)
        if hash_cache is not None:
            hash_cache.flush()
    return Manifest(entries, limits)


def _check_total(root: Path, resolver: Resolver, rels: list[str], limits: Limits) -> None:
    """Refuse a tree over the size limit from its sizes alone, before reading (a sparse file is cheap to make)."""
    total = 0
    for rel in rels:
        try:
            total += os.stat(resolver.path(rel)).st_size
        except (OSError, UnsafeFile):
            continue  # reported with its reason when the file is scanned
        if total > limits.max_total_size:
            raise ManifestError(f"{root} holds more than the limit of {limits.max_total_size} bytes "
                                f"(at {rel}); leave large files out with [assets] exclude")


def walk_files(root: Path) -> Iterable[str]:
    """Sorted relative paths of every file under ``root``; symlinked folders are not entered."""
    real_root = os.path.realpath(root)
    found = []
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        prefix = "" if rel_folder == "." else rel_folder + "/"
        for name in list(dirs):
            full = os.path.join(folder, name)
            if os.path.islink(full):
                dirs.remove(name)
                _check_link_inside(real_root, full, prefix + name)
                log.debug("not entering symlinked folder %s", prefix + name)
        dirs.sort()
        found.extend(prefix + name for name in files)
    return sorted(found)


def _checked(rel: str) -> str:
    try:
        return safe_relpath(rel)
    except UnsafePath as exc:
        raise UnsafeFile(str(exc)) from None


def _check_link_inside(real_root: str, full: str, rel: str) -> None:
    target = os.path.realpath(full)
    if target != real_root and not target.startswith(real_root.rstrip("/") + "/"):
        raise UnsafeFile(f"{rel}: symlink leads outside the tree (to {target})")


def _scan_file(
    root: Path, resolver: Resolver, root_fd: int, rel: str, cache: HashCache | None, limits: Limits
) -> FileEntry:
    try:
        check_path(rel, limits)
    except ManifestError as exc:
        raise UnsafeFile(str(exc)) from None
    real_path = resolver.path(rel)
    try:
        pre = os.stat(real_path)  # refuse device files before opening them: an open can have effects
        if not stat.S_ISREG(pre.st_mode) and not stat.S_ISDIR(pre.st_mode):
            raise UnsafeFile(f"{rel}: {_kind(pre.st_mode)}, not a regular file; refusing to synchronise it")
        fd = open_beneath(root_fd, os.path.relpath(real_path, resolver.root), _OPEN_FLAGS)
    except SymlinkRefused as exc:
        raise UnsafeFile(f"{rel}: changed into a symlink while being scanned ({exc})") from None
    except FileNotFoundError:
        raise SyncError(f"{rel}: listed but missing from {root} (or a broken symlink)") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a fifo without a writer
            raise UnsafeFile(
                f"{rel}: not a regular file (socket or fifo); refusing to synchronise it"
            ) from None
        raise SyncError(f"{rel}: cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise SyncError(f"{rel}: is a folder, expected a file")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{rel}: {_kind(st.st_mode)}, not a regular file; refusing to synchronise it")
        if st.st_size > limits.max_file_size:
            raise ManifestError(f"{rel}: {st.st_size} bytes is over the limit of {limits.max_file_size}")
        block_size = block_size_for(st.st_size)
        hashes = cache.get(real_path, st, block_size) if cache is not None else None
        if hashes is None:
            started = now_ns()
            try:
                hashes = hash_fd(fd, st.st_size, block_size)
            except OSError as exc:
                raise SyncError(
                    f"{rel}: could not be read ({exc}); did it change while being scanned?"
                ) from None
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                raise SyncError(f"{rel}: changed while being scanned; scan again once it is written")
            if cache is not None:
                cache.put(real_path, st, block_size, hashes, started)
        return FileEntry(rel, st.st_size, st.st_mtime_ns, regular_mode(st.st_mode), block_size, hashes)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"
