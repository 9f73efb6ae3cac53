"""What this agent holds of each tree, for its peer server to serve and advertise.

A tree is known by its manifest (the controller's, verified on arrival), so every block a peer
asks for is looked up by hash in a manifest this agent has, and read from a file the local cache
names by digest: its stored file (``files/ab/<digest>``) or the partial file the fetch is filling
(``<session>/<digest>.part``). Nothing from the network becomes a path. A block counts as held
once it was verified here (fetched and hashed, reused and hashed, resumed and hashed).

The block order (`block_order`) is the manifest's unique blocks in file order; both ends compute
it from the same manifest, so a `have` bitmap needs no hashes on the wire.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from farm.filesync.manifest import FileEntry, Manifest
from farm.filesync.published import BlockOfFile

MAX_TREES = 16  # manifests advertised at once; the oldest is forgotten first


def block_order(manifest: Manifest) -> list[bytes]:
    """The manifest's distinct block hashes, in file order (the index space of a `have` bitmap)."""
    return list(_places(manifest))


def _places(manifest: Manifest) -> dict[bytes, tuple[FileEntry, int]]:
    places: dict[bytes, tuple[FileEntry, int]] = {}
    for entry in manifest.unique_files():
        for index, block_hash, _, _ in entry.blocks():
            places.setdefault(block_hash, (entry, index))
    return places


def bitmap(indices: Iterable[int], count: int) -> bytes:
    out = bytearray((count + 7) // 8)
    for i in indices:
        out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def from_bitmap(data: bytes | memoryview, count: int) -> set[int]:
    """The indices set in a bitmap of ``count`` bits (a short or long bitmap is refused: ValueError)."""
    if len(data) != (count + 7) // 8:
        raise ValueError(f"a bitmap of {count} blocks has {(count + 7) // 8} bytes, not {len(data)}")
    return {i for i in range(count) if data[i >> 3] >> (i & 7) & 1}


@dataclass(frozen=True)
class Where(BlockOfFile):
    """One block of a held tree: its file (by digest), its place in it, and the files that may hold it."""

    entry: FileEntry
    index: int
    paths: tuple[str, ...]  # the stored file first, then the partial file


@dataclass
class _Tree:
    manifest: Manifest
    order: list[bytes]
    position: dict[bytes, int]
    places: dict[bytes, tuple[FileEntry, int]]
    file_path: Callable[[bytes], Path]
    partial_dir: Path | None
    held: set[int] = field(default_factory=set)


class Holdings:
    """Thread-safe: fetch threads record blocks, the peer server thread reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trees: OrderedDict[str, _Tree] = OrderedDict()

    def begin(self, manifest: Manifest, file_path: Callable[[bytes], Path], partial_dir: Path | None,
              missing: Iterable[bytes] = ()) -> list[bytes]:
        """Advertise ``manifest``: every block is held but ``missing``; returns its `block_order`.

        ``file_path(digest)``: the cache's file of a digest; ``partial_dir``: where the fetch
        assembles files (``<digest hex>.part``), None when the cache holds them all.
        """
        places = _places(manifest)
        order = list(places)
        position = {h: i for i, h in enumerate(order)}
        lacking = {position[h] for h in missing if h in position}
        tree = _Tree(manifest, order, position, places, file_path, partial_dir,
                     set(range(len(order))) - lacking)
        with self._lock:
            self._trees[manifest.id] = tree
            self._trees.move_to_end(manifest.id)
            while len(self._trees) > MAX_TREES:
                self._trees.popitem(last=False)
        return order

    def add(self, manifest_id: str, block_hash: bytes) -> None:
        """A block of the tree was verified here."""
        with self._lock:
            tree = self._trees.get(manifest_id)
            if tree is not None and (i := tree.position.get(block_hash)) is not None:
                tree.held.add(i)

    def forget(self, manifest_id: str) -> None:
        with self._lock:
            self._trees.pop(manifest_id, None)

    def have(self, manifest_id: str) -> tuple[int, bytes] | None:
        """(block count, bitmap of the blocks held) of a tree, or None if it is not held here."""
        with self._lock:
            tree = self._trees.get(manifest_id)
            if tree is None:
                return None
            return len(tree.order), bitmap(tree.held, len(tree.order))

    def where(self, block_hash: bytes) -> Where | None:
        """Where a held block may be read, or None if no held tree has it verified here."""
        with self._lock:
            for tree in reversed(self._trees.values()):
                i = tree.position.get(block_hash)
                if i is None or i not in tree.held:
                    continue
                entry, index = tree.places[block_hash]
                paths = [str(tree.file_path(entry.digest))]
                if tree.partial_dir is not None:
                    paths.append(str(tree.partial_dir / f"{entry.digest.hex()}.part"))
                return Where(entry, index, tuple(paths))
        return None
