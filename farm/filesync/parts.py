"""A tree too big for one manifest, served as several: parts each within the limits.

A map rendered to zoom 10 writes 1.4 million tiles; one manifest holds at most
`Limits.max_files` files in at most `Limits.max_manifest_bytes`, the bounds a client holds an
untrusted server's manifest to. So the tree is cut, in path order, into parts each within
them; the client fetches and checks the parts one after another, as it checks one manifest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from farm.filesync.errors import ManifestError
from farm.filesync.hashcache import HashCache
from farm.filesync.hashing import HASH_LEN, block_count, block_size_for
from farm.filesync.limits import DEFAULT_LIMITS, Limits
from farm.filesync.manifest import Manifest
from farm.filesync.scan import build_manifest

ENTRY_BYTES = 96  # an entry's encoded fields besides its path and block hashes, generously


def build_parts(root: Path, paths: Iterable[str], *, hash_cache: HashCache | None = None,
                limits: Limits = DEFAULT_LIMITS) -> list[Manifest]:
    """Hash ``paths`` of ``root`` into manifests within ``limits``: each at most ``max_files``
    files, ``max_manifest_bytes`` encoded and ``max_total_size`` bytes, in path order.
    One manifest when the tree fits in one; raises as `build_manifest` (a file over the limits)."""
    parts = []
    pending = list(_chunks(root, sorted(set(paths)), limits))
    while pending:
        chunk = pending.pop(0)
        manifest = build_manifest(root, chunk, hash_cache=hash_cache, limits=limits)
        if len(manifest.to_bytes()) > limits.max_manifest_bytes:  # the estimate fell short: halve it
            if len(chunk) == 1:
                raise ManifestError(f"{root}/{chunk[0]}: its manifest entry alone is over the limit of "
                                    f"{limits.max_manifest_bytes} bytes")
            pending[:0] = [chunk[: len(chunk) // 2], chunk[len(chunk) // 2:]]
            continue
        parts.append(manifest)
    return parts or [Manifest([], limits)]


def _chunks(root: Path, rels: list[str], limits: Limits) -> Iterable[list[str]]:
    """``rels`` cut where a part would pass a limit (its encoded size estimated from the sizes)."""
    budget = limits.max_manifest_bytes * 3 // 4
    chunk: list[str] = []
    encoded = size = 0
    for rel in rels:
        try:
            length = os.stat(root / rel).st_size
        except OSError:
            length = 0  # reported with its reason when it is hashed
        cost = len(rel.encode()) + ENTRY_BYTES + HASH_LEN * block_count(length, block_size_for(length))
        if chunk and (len(chunk) >= limits.max_files or encoded + cost > budget
                      or size + length > limits.max_total_size):
            yield chunk
            chunk, encoded, size = [], 0, 0
        chunk.append(rel)
        encoded += cost
        size += length
    if chunk:
        yield chunk
