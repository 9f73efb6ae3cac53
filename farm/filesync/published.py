"""The controller's published trees, indexed by block hash for serving and local reuse.

Each tree pins its root folder with a descriptor taken when it is published, so files
are later opened beneath that very folder (`farm.safeopen`), whatever happens to the
path leading to it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.filesync.errors import UnsafeFile
from farm.filesync.manifest import FileEntry, Manifest
from farm.filesync.resolve import Resolver
from farm.safeopen import open_dir


class RootDir:
    """An open descriptor of a published tree's root folder; closed when no index holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = open_dir(path)

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except (OSError, AttributeError):
            pass


class BlockOfFile:
    """A block's byte range in its file, from ``entry`` and ``index`` (a mixin of dataclasses)."""

    entry: FileEntry
    index: int

    @property
    def offset(self) -> int:
        return self.index * self.entry.block_size

    @property
    def length(self) -> int:
        return self.entry.block_length(self.index)


@dataclass(frozen=True)
class Place(BlockOfFile):
    """Where one block of a published tree lives on the controller's disk."""

    resolver: Resolver  # the tree's root: opens its files, refusing links that lead out
    root: RootDir  # its descriptor: files are opened beneath it, no symlink on the way
    key: str  # root and path as one plain string, shared by the file's blocks (hashed per block served)
    entry: FileEntry
    index: int


class TreeIndex:
    """An immutable snapshot of the published trees; replaced whole on publish (copy on write).

    Each tree's blocks are indexed once, when it is published: a new snapshot merges the trees'
    dicts (C speed), so publishing a small tree beside a run's million output files costs
    milliseconds, not seconds of building places again under the server's lock.
    """

    def __init__(self, trees: dict[str, tuple[RootDir, Manifest, bytes]] | None = None,
                 tree_blocks: dict[str, dict[bytes, Place]] | None = None) -> None:
        self.trees = dict(trees or {})
        self.tree_blocks = dict(tree_blocks or {})
        self.blocks: dict[bytes, Place] = {}
        for blocks in reversed(list(self.tree_blocks.values())):  # the first tree published serves a block
            self.blocks.update(blocks)

    def with_tree(self, tree: str, root: Path, manifest: Manifest) -> TreeIndex:
        """This index plus ``tree``; raises `farm.paths.UnsafePath` if a component of ``root`` is a symlink now."""
        trees, tree_blocks = dict(self.trees), dict(self.tree_blocks)
        trees[tree] = (RootDir(Path(os.path.realpath(root))), manifest, manifest.to_bytes())
        tree_blocks[tree] = _places(trees[tree][0], manifest)
        return TreeIndex(trees, tree_blocks)

    def without_tree(self, tree: str) -> TreeIndex:
        trees, tree_blocks = dict(self.trees), dict(self.tree_blocks)
        trees.pop(tree, None)
        tree_blocks.pop(tree, None)
        return TreeIndex(trees, tree_blocks)

    def find_blocks(self, hashes: Sequence[bytes]) -> dict[bytes, list[tuple[str, int, int]]]:
        found = {}
        for block_hash in hashes:
            place = self.blocks.get(block_hash)
            if place is not None:
                try:
                    path = place.resolver.path(place.entry.path, checked=True)
                except UnsafeFile:
                    continue
                found[block_hash] = [(path, place.offset, place.length)]
        return found


def _places(root: RootDir, manifest: Manifest) -> dict[bytes, Place]:
    resolver = Resolver(root.path)
    places: dict[bytes, Place] = {}
    for entry in manifest:
        key = f"{root.path}/{entry.path}"
        for index in range(entry.block_count):
            places.setdefault(entry.block_hash(index), Place(resolver, root, key, entry, index))
    return places
