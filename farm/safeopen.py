"""Open files beneath a directory descriptor with no symlink anywhere on the way.

A path checked once and opened later can change in between: a folder swapped for a
symlink sends the open elsewhere. These helpers resolve every component at the moment of
use, relative to a directory descriptor taken earlier: `openat2` with
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` where the kernel has it (Linux 5.6+), else one
`openat` per component with ``O_NOFOLLOW`` (and ``O_DIRECTORY`` for folders). A symlink
met on the way raises `SymlinkRefused`; the caller decides what that means.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat

from farm.paths import UnsafePath, safe_relpath

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437}.get(platform.machine())
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkRefused(UnsafePath):
    """A component of the path was a symlink (or led outside its folder) when it was opened."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True) if _SYS_OPENAT2 is not None else None
_have_openat2 = _libc is not None  # turned off at the first ENOSYS (old kernel, or a sandbox's filter)


def _openat2(dirfd: int, rel: str, flags: int, mode: int) -> int | None:
    """The descriptor, or None when the kernel lacks openat2."""
    global _have_openat2
    assert _libc is not None
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM) and _have_openat2:  # EPERM: a seccomp filter that forbids it
        _have_openat2 = False
        return None
    if err in (errno.ELOOP, errno.EXDEV):
        raise SymlinkRefused(f"{rel}: a component is a symlink (refused: paths are opened without following links)")
    raise OSError(err, os.strerror(err), rel)


def open_beneath(dirfd: int, rel: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor for ``rel`` under the folder ``dirfd``, no component of it a symlink.

    ``rel`` is a relative POSIX path (checked with `safe_relpath`); ``flags`` are `os.open`
    flags (``O_CREAT`` creates the last component with ``mode``). Raises `SymlinkRefused`
    for a symlink anywhere on the way, `UnsafePath` for a path leaving the folder, and
    `OSError` as `os.open` would.
    """
    rel = safe_relpath(rel)
    if _have_openat2:
        fd = _openat2(dirfd, rel, flags, mode)
        if fd is not None:
            return fd
    parts = rel.split("/")
    current = dirfd
    try:
        for part in parts[:-1]:
            step = _step(current, part, _DIR_FLAGS, 0, rel)
            if current != dirfd:
                os.close(current)
            current = step
        return _step(current, parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, rel)
    finally:
        if current != dirfd:
            os.close(current)


def _step(current: int, name: str, flags: int, mode: int, rel: str) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=current)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(current, name)):
            raise SymlinkRefused(f"{rel}: {name} is a symlink (refused: paths are opened without following "
                                 "links)") from None
        raise


def _is_link(dirfd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir(path: str | os.PathLike[str]) -> int:
    """A descriptor for the absolute folder ``path``, refusing it if any component is a symlink now.

    Give it a real path (`os.path.realpath`): the descriptor then pins that very folder.
    """
    path = os.fspath(path)
    if not os.path.isabs(path):
        raise UnsafePath(f"{path}: expected an absolute path")
    rel = os.path.normpath(path).lstrip("/")
    if not rel:
        return os.open("/", _DIR_FLAGS)
    root = os.open("/", _DIR_FLAGS)
    try:
        return open_beneath(root, rel, os.O_RDONLY | os.O_DIRECTORY)
    finally:
        os.close(root)
