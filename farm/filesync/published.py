"""The controller's published trees, indexed by block hash for serving and local reuse."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from farm.filesync.manifest import FileEntry, Manifest
from farm.filesync.resolve import Resolver


@dataclass(frozen=True)
class Place:
    """Where one block of a published tree lives on the controller's disk."""

    root: Path
    entry: FileEntry
    index: int

    @property
    def path(self) -> Path:
        return self.root / self.entry.path

    @property
    def offset(self) -> int:
        return self.index * self.entry.block_size

    @property
    def length(self) -> int:
        return self.entry.block_length(self.index)


class TreeIndex:
    """An immutable snapshot of the published trees; replaced whole on publish (copy on write)."""

    def __init__(self, trees: dict[str, tuple[Path, Manifest, bytes]] | None = None) -> None:
        self.trees = dict(trees or {})
        self.blocks: dict[bytes, Place] = {}
        self.resolvers = {root: Resolver(root) for root, _, _ in self.trees.values()}
        for root, manifest, _ in self.trees.values():
            for entry in manifest:
                for index in range(entry.block_count):
                    self.blocks.setdefault(entry.block_hash(index), Place(root, entry, index))

    def with_tree(self, tree: str, root: Path, manifest: Manifest) -> TreeIndex:
        trees = dict(self.trees)
        trees[tree] = (Path(os.path.realpath(root)), manifest, manifest.to_bytes())
        return TreeIndex(trees)

    def without_tree(self, tree: str) -> TreeIndex:
        trees = dict(self.trees)
        trees.pop(tree, None)
        return TreeIndex(trees)

    def find_block(self, block_hash: bytes) -> list[tuple[Path, int, int]]:
        place = self.blocks.get(block_hash)
        return [(place.path, place.offset, place.length)] if place else []
