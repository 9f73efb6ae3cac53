"""A project's files for an agent on the controller's own machine, without copying their bytes.

The controller names the folder it published (`local_hint`); an agent that opted in
(``farm agent --local-assets``; the embedded farm's agents do) and can prove it sees the
same folder (same boot, same user, the folder's device and inode, and every file's size and
mtime equal to the manifest's, which the controller hashed) gives its project folder the
files as

- **reflinks** (``FICLONE``: Btrfs, XFS, bcachefs) where the filesystem has them: a private
  copy-on-write snapshot, so a later edit of the source never reaches a running job; else
- **hard links**: the source's own inode, so a save-by-rename (what most editors and Blender
  do) leaves the job its old file, but an in-place write shows through. `LocalView.changed`
  re-stats every linked file; the agent calls it before it reports results (once per turn for
  all that came in it) and fails the jobs whose files moved, and the jobs its workers held then
  (they read the edited files too), so a changed asset never yields a silent wrong output.

Anything else (another filesystem, a symlink, a file that moved since it was hashed) makes
`LocalView.make` return None and the agent fetches through the synchroniser as a remote one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.filesync.manifest import Manifest
from farm.filesync.resolve import Resolver
from farm.safeopen import open_beneath

log = logging.getLogger(__name__)

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    """This kernel's boot id (the same for every process on this machine until it reboots)."""
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


def local_hint(root: Path | str) -> dict[str, Any]:
    """What the controller tells agents about a published folder, for `LocalView.make`."""
    st = os.stat(root)
    return {"root": str(root), "boot": boot_id(), "dev": st.st_dev, "ino": st.st_ino, "uid": os.getuid()}


@dataclass
class LocalView:
    """The files of one project placed from the controller's folder; ``linked`` can change under a job."""

    folder: Path
    reflinked: int = 0
    # target path -> (ino, size, mtime_ns) of a hard-linked file
    linked: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @classmethod
    def make(cls, hint: Any, manifest: Manifest, dest: Path) -> LocalView | None:
        """Place ``manifest``'s files in ``dest`` from the folder ``hint`` names, or None where
        this agent cannot prove it sees that folder's very files (then fetch them instead)."""
        why = _mismatch(hint)
        if why is not None:
            log.info("not using the controller's folder directly: %s", why)
            return None
        try:
            rootfd = os.open(hint["root"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            log.info("not using the controller's folder directly: %s", exc)
            return None
        try:
            st = os.fstat(rootfd)
            if (st.st_dev, st.st_ino) != (hint["dev"], hint["ino"]):
                log.info(
                    "not using the controller's folder directly: %s is another folder here", hint["root"]
                )
                return None
            shutil.rmtree(dest, ignore_errors=True)  # nothing half-made from an earlier try stays
            dest.mkdir(parents=True)
            view = cls(dest)
            if view._place(hint["root"], rootfd, manifest, hint["uid"]):
                return view
            shutil.rmtree(dest, ignore_errors=True)
            return None
        finally:
            os.close(rootfd)

    def _place(self, root: str, rootfd: int, manifest: Manifest, uid: int) -> bool:
        resolver = Resolver(self.folder)
        for entry in manifest:
            try:
                src = open_beneath(rootfd, entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            except (OSError, ValueError) as exc:  # a symlink on the way, a vanished file
                log.info("not using the controller's folder directly: %s: %s", entry.path, exc)
                return False
            try:
                st = os.fstat(src)
                if (st.st_uid, st.st_size, st.st_mtime_ns) != (uid, entry.size, entry.mtime_ns):
                    log.info(
                        "not using the controller's folder directly: %s changed since it was hashed",
                        entry.path,
                    )
                    return False
                head, _, name = entry.path.rpartition("/")
                folder = resolver.folder(head)
                os.makedirs(folder, exist_ok=True)
                target = f"{folder}/{name}"
                if _reflink(src, target, entry.mode, entry.mtime_ns):
                    self.reflinked += 1
                    continue
                try:
                    os.link(f"{root}/{entry.path}", target, follow_symlinks=False)
                    linked = os.lstat(target)
                except OSError as exc:
                    log.info(
                        "not using the controller's folder directly: cannot link %s: %s",
                        entry.path,
                        exc.strerror,
                    )
                    return False
                if (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):  # swapped since we checked it
                    log.info("not using the controller's folder directly: %s was replaced", entry.path)
                    return False
                self.linked[target] = (st.st_ino, st.st_size, st.st_mtime_ns)
            finally:
                os.close(src)
        return True

    def changed(self) -> str | None:
        """The first hard-linked file that is no longer what was linked (edited in place), or None."""
        for target, seen in self.linked.items():
            try:
                st = os.stat(target)
            except OSError:
                return f"{target} is gone"
            if (st.st_ino, st.st_size, st.st_mtime_ns) != seen:
                rel = os.path.relpath(target, self.folder)
                return f"the project's file {rel} was modified while the job ran"
        return None


def _mismatch(hint: Any) -> str | None:
    if not isinstance(hint, dict) or not isinstance(hint.get("root"), str):
        return "no folder named"
    if not all(isinstance(hint.get(k), int) for k in ("dev", "ino", "uid")):
        return "the folder's identity is missing"
    if hint.get("boot") != boot_id() or not hint["boot"]:
        return "another machine (or boot)"
    if hint["uid"] != os.getuid():
        return "another user"
    if not os.path.isabs(hint["root"]):
        return "not an absolute path"
    return None


def _reflink(src: int, target: str, mode: int, mtime_ns: int) -> bool:
    """Clone ``src`` into a new file ``target`` (read-only, its mtime kept); False where the
    filesystem cannot (nothing is left behind then)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.ioctl(fd, FICLONE, src)
    except OSError:
        os.close(fd)
        os.unlink(target)
        return False
    try:
        os.fchmod(fd, 0o500 if mode & 0o111 else 0o400)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)
    return True
