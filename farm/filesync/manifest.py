"""Manifests: what a tree holds, file by file, down to block hashes.

A manifest travels as one msgpack document in a raw frame. Everything read from the
network goes through `Manifest.from_bytes`, which refuses unsafe or non-normal paths,
duplicates, a file that is also a folder, sizes or counts over the `Limits`, and block
lists that do not fit the size. File digests are recomputed, never taken on trust.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import blake3
import msgpack

from farm.filesync.errors import ManifestError
from farm.filesync.hashing import HASH_LEN, block_count, block_length, block_size_for, file_digest
from farm.filesync.limits import DEFAULT_LIMITS, Limits
from farm.paths import UnsafePath, safe_relpath

WIRE_VERSION = 1
_MAX_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One regular file of a tree.

    ``hashes`` is the concatenation of the 32-byte blake3 hashes of its blocks (compact
    on the wire and in memory); ``digest`` identifies the content and is derived from them.
    """

    path: str
    size: int
    mtime_ns: int
    mode: int
    block_size: int
    hashes: bytes
    digest: bytes = field(default=b"", compare=False)

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", file_digest(self.size, self.block_size, self.hashes))

    @property
    def block_count(self) -> int:
        return len(self.hashes) // HASH_LEN

    def block_hash(self, index: int) -> bytes:
        return self.hashes[index * HASH_LEN : (index + 1) * HASH_LEN]

    def block_length(self, index: int) -> int:
        return block_length(self.size, self.block_size, index)

    def blocks(self) -> Iterator[tuple[int, bytes, int, int]]:
        """(index, hash, offset, length) of each block."""
        for i in range(self.block_count):
            yield i, self.block_hash(i), i * self.block_size, self.block_length(i)

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)

    def to_wire(self) -> list[Any]:
        return [self.path, self.size, self.mtime_ns, self.mode, self.block_size, self.hashes]

    @classmethod
    def from_wire(cls, item: Any, limits: Limits = DEFAULT_LIMITS) -> FileEntry:
        if not isinstance(item, list) or len(item) != 6:
            raise ManifestError("a manifest entry must be a list of 6 fields")
        path, size, mtime_ns, mode, block_size, hashes = item
        if not isinstance(path, str):
            raise ManifestError(f"entry path must be a string, got {type(path).__name__}")
        where = f"manifest entry {path[:200]!r}"
        for name, value in (
            ("size", size),
            ("mtime_ns", mtime_ns),
            ("mode", mode),
            ("block_size", block_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ManifestError(f"{where}: {name} must be an integer")
        if not 0 <= size <= limits.max_file_size:
            raise ManifestError(f"{where}: size {size} is outside 0..{limits.max_file_size}")
        if not -_MAX_INT <= mtime_ns <= _MAX_INT:
            raise ManifestError(f"{where}: mtime_ns {mtime_ns} is out of range")
        if not 0 <= mode <= 0o777:
            raise ManifestError(f"{where}: mode {mode:#o} is not a permission mode (0..0o777)")
        if block_size != block_size_for(size):
            raise ManifestError(f"{where}: block size {block_size} does not fit a file of {size} bytes")
        if not isinstance(hashes, bytes):
            raise ManifestError(f"{where}: block hashes must be bytes")
        if len(hashes) != block_count(size, block_size) * HASH_LEN:
            raise ManifestError(f"{where}: {len(hashes)} bytes of block hashes do not fit {size} bytes")
        return cls(path, size, mtime_ns, mode, block_size, hashes)


def check_path(path: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse a path that is not already relative, normalised and of sane length."""
    try:
        norm = safe_relpath(path)
    except UnsafePath as exc:
        raise ManifestError(f"unsafe path in manifest: {exc}") from None
    if norm != path:
        raise ManifestError(f"path {path[:200]!r} is not normalised (expected {norm[:200]!r})")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"path {path[:200]!r} is not valid UTF-8") from None
    if len(encoded) > limits.max_path_bytes:
        raise ManifestError(f"path {path[:200]!r}... is longer than {limits.max_path_bytes} bytes")
    if len(encoded) > 255 and any(len(part.encode("utf-8")) > 255 for part in path.split("/")):
        raise ManifestError(f"path {path[:200]!r} has a name longer than 255 bytes")


class Manifest:
    """An immutable, sorted set of `FileEntry` with a stable ``id`` (hash of its entries).

    Paths are checked on construction, so no manifest with an unsafe path exists, whether
    it was scanned here or decoded from the network.
    """

    __slots__ = ("_by_path", "entries", "id", "total_size")

    def __init__(self, entries: Iterable[FileEntry], limits: Limits = DEFAULT_LIMITS) -> None:
        self.entries: tuple[FileEntry, ...] = tuple(sorted(entries, key=lambda e: e.path))
        if len(self.entries) > limits.max_files:
            raise ManifestError(f"manifest lists {len(self.entries)} files, more than {limits.max_files}")
        self._by_path = {e.path: e for e in self.entries}
        if len(self._by_path) != len(self.entries):
            dup = next(
                a.path for a, b in zip(self.entries, self.entries[1:], strict=False) if a.path == b.path
            )
            raise ManifestError(f"path {dup!r} appears twice in the manifest")
        for entry in self.entries:
            check_path(entry.path, limits)
            parent = entry.path.rpartition("/")[0]
            while parent:
                if parent in self._by_path:
                    raise ManifestError(f"{parent!r} is both a file and the folder of {entry.path!r}")
                parent = parent.rpartition("/")[0]
        self.total_size = sum(e.size for e in self.entries)
        if self.total_size > limits.max_total_size:
            raise ManifestError(f"manifest holds {self.total_size} bytes, more than {limits.max_total_size}")
        self.id = blake3.blake3(self.to_bytes()).hexdigest()[:32]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<Manifest {self.id} {len(self.entries)} files {self.total_size} bytes>"

    def get(self, path: str) -> FileEntry | None:
        return self._by_path.get(path)

    def unique_files(self) -> list[FileEntry]:
        """One entry per distinct content, in path order."""
        seen: dict[bytes, FileEntry] = {}
        for entry in self.entries:
            seen.setdefault(entry.digest, entry)
        return list(seen.values())

    def to_wire(self) -> dict[str, Any]:
        return {"v": WIRE_VERSION, "files": [e.to_wire() for e in self.entries]}

    def to_bytes(self) -> bytes:
        return msgpack.packb(self.to_wire(), use_bin_type=True)

    @classmethod
    def from_wire(cls, data: Any, limits: Limits = DEFAULT_LIMITS) -> Manifest:
        if not isinstance(data, dict) or set(data) != {"v", "files"}:
            raise ManifestError("a manifest must be a map with keys 'v' and 'files'")
        if data["v"] != WIRE_VERSION:
            raise ManifestError(f"manifest version {data['v']!r} is not supported (expected {WIRE_VERSION})")
        files = data["files"]
        if not isinstance(files, list):
            raise ManifestError("manifest 'files' must be a list")
        if len(files) > limits.max_files:
            raise ManifestError(f"manifest lists {len(files)} files, more than {limits.max_files}")
        return cls((FileEntry.from_wire(item, limits) for item in files), limits)

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> Manifest:
        """Decode and validate a manifest from untrusted bytes; raises `ManifestError`."""
        if len(raw) > limits.max_manifest_bytes:
            raise ManifestError(f"manifest of {len(raw)} bytes exceeds {limits.max_manifest_bytes}")
        try:
            data = msgpack.unpackb(raw, raw=False, strict_map_key=True, ext_hook=_reject_ext)
        except ManifestError:
            raise
        except Exception as exc:
            raise ManifestError(f"undecodable manifest: {type(exc).__name__}: {exc}") from None
        return cls.from_wire(data, limits)


def _reject_ext(code: int, data: bytes) -> Any:
    raise ManifestError(f"msgpack extension type {code} is not allowed in a manifest")


def regular_mode(st_mode: int) -> int:
    """Permission bits worth carrying (no setuid, setgid or sticky bits)."""
    return stat.S_IMODE(st_mode) & 0o777
