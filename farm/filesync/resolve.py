"""Relative paths to real paths under a root, refusing any that lead outside it.

`farm.paths.resolve_inside` resolves a whole path per call; a tree of thousands of
files resolves the same folders again and again, so `Resolver` resolves each folder
once and only looks at the last component per file.
"""

from __future__ import annotations

import os
from pathlib import Path

from farm.filesync.errors import UnsafeFile
from farm.paths import UnsafePath, safe_relpath


class Resolver:
    """Real paths of files under ``root``; raises `UnsafeFile` for any path leading out of it."""

    def __init__(self, root: Path | str) -> None:
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip("/") + "/"
        self._folders: dict[str, str] = {"": self.root}

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self._prefix)

    def folder(self, rel: str) -> str:
        """The real path of a folder (which need not exist yet) under the root."""
        found = self._folders.get(rel)
        if found is None:
            found = os.path.realpath(os.path.join(self.root, rel))
            if not self.inside(found):
                raise UnsafeFile(f"{rel}: leads outside {self.root} through a symlink (to {found})")
            self._folders[rel] = found
        return found

    def path(self, rel: str, *, follow: bool = True, checked: bool = False) -> str:
        """The real path of ``rel``.

        ``follow`` (reading): a final symlink is followed if it stays inside the root.
        Not ``follow`` (writing): the path of the entry itself, which a rename replaces
        without following; a final symlink leading outside is refused all the same.
        ``checked``: ``rel`` comes from a `Manifest`, whose paths are already safe and normal.
        """
        if not checked:
            try:
                rel = safe_relpath(rel)
            except UnsafePath as exc:
                raise UnsafeFile(str(exc)) from None
        head, _, name = rel.rpartition("/")
        full = os.path.join(self.folder(head), name)
        if os.path.islink(full):
            target = os.path.realpath(full)
            if not self.inside(target):
                raise UnsafeFile(f"{rel}: symlink leads outside {self.root} (to {target})")
            return target if follow else full
        return full

    def forget(self) -> None:
        """Drop cached folders (after the tree's folders may have been replaced)."""
        self._folders = {"": self.root}
