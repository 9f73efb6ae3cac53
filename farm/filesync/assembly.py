"""Assemble files from verified blocks in partial files: resume, reuse local blocks, accept remote ones.

The same machinery serves every direction: an agent fetching into its cache, and the
controller receiving uploads (job outputs, a submitted project). A block is written to
its place as its chunks arrive and hashed on the way; it counts as done only once its
hash matches. Nothing reads a partial file until it is complete, so a bad block is
simply written again.

A partial file is self-describing: on resume, each block already holding data is
hashed and kept if it matches (holes are skipped with SEEK_DATA), so no progress
journal is needed and an interrupted transfer resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import blake3

from farm.filesync.errors import ManifestError
from farm.filesync.hashing import hash_block
from farm.filesync.manifest import FileEntry

log = logging.getLogger(__name__)


Places = dict[bytes, list[tuple[str, int, int]]]


class BlockSource(Protocol):
    """Somewhere blocks may already be on this machine (the cache, published trees)."""

    def find_blocks(self, hashes: Sequence[bytes]) -> Places:
        """Candidate (file, offset, length) places of the blocks it knows of, by hash (one
        lookup for many: a fresh fetch asks about thousands). The caller verifies what it reads."""
        ...


class Outcome(enum.Enum):
    PARTIAL = "partial"  # more chunks of the block are due
    DONE = "done"  # the block is complete and verified
    BAD = "bad"  # the block failed verification (or arrived out of order): send it again
    IGNORED = "ignored"  # not needed (already done, or never asked for)


@dataclass(eq=False)
class Partial:
    entry: FileEntry
    path: Path
    remaining: set[int] = field(default_factory=set)
    created: bool = False  # created lazily: most files of a fresh fetch need no resume scan
    stat: os.stat_result | None = None  # once finished with a mode (see `Assembly`)


class Finished(NamedTuple):
    """A complete, verified file: its entry, where it is, and its stat if the mode was set."""

    entry: FileEntry
    path: Path
    stat: os.stat_result | None


@dataclass
class _Incoming:
    hasher: blake3.blake3
    received: int
    length: int


class Assembly:
    """Builds the given files (one per digest) inside ``partial_dir``.

    Call `prepare` once, then feed `accept` with remote chunks of the `missing` blocks;
    completed files come out of `take_ready` for the caller to move into place. With
    ``mode_for``, each finished file gets that mode and its entry's mtime through the
    descriptor still open (no path lookups per file) and `Finished.stat` is its stat
    after. Counters: ``resumed`` (blocks found verified in partial files),
    ``reused`` (blocks copied from local sources), ``received``, ``rejected``.
    """

    def __init__(
        self,
        files: Iterable[FileEntry],
        partial_dir: Path,
        sources: Sequence[BlockSource] = (),
        *,
        mode_for: Callable[[FileEntry], int] | None = None,
        max_open: int = 32,
    ) -> None:
        self.partial_dir = partial_dir
        self.sources = sources
        self.mode_for = mode_for
        self._files = {e.digest: e for e in files}
        self._need: dict[bytes, list[tuple[Partial, int]]] = {}
        self._incoming: dict[bytes, _Incoming] = {}
        self._ready: list[Partial] = []
        self._open: OrderedDict[Path, int] = OrderedDict()
        self._max_open = max_open
        self.resumed = self.reused = self.received = self.rejected = 0

    # -- set-up ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Open or resume each partial file, then fill what local sources can give."""
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        present = set(os.listdir(self.partial_dir))  # one listing, not a stat per file
        for entry in self._files.values():
            name = f"{entry.digest.hex()}.part"
            part = Partial(entry, self.partial_dir / name, set(range(entry.block_count)))
            if name in present:
                part.created = True
                fd = self._fd(part)
                self._resume(part, fd)
                os.ftruncate(fd, entry.size)
            for index in sorted(part.remaining):
                block_hash = entry.block_hash(index)
                places = self._need.setdefault(block_hash, [])
                if places and places[0][0].entry.block_length(places[0][1]) != entry.block_length(index):
                    raise ManifestError(
                        f"{entry.path}: block {index} shares a hash with a block of another length"
                    )
                places.append((part, index))
            if not part.remaining:
                self._finish(part)
        if self.sources:
            self._reuse_local()

    def _resume(self, part: Partial, fd: int) -> None:
        size = os.fstat(fd).st_size
        before = len(part.remaining)
        for index, block_hash, offset, length in part.entry.blocks():
            if offset + length > size:
                break
            if not _has_data(fd, offset, length):
                continue
            if hash_block(os.pread(fd, length, offset)) == block_hash:
                part.remaining.discard(index)
                self.resumed += 1
        if len(part.remaining) < before:
            log.debug("resuming %s: %d blocks already here", part.entry.path, before - len(part.remaining))

    def _reuse_local(self) -> None:
        source_fds: OrderedDict[str, int] = OrderedDict()  # consecutive blocks often share a file
        pending = list(self._need)
        try:
            for source in self.sources:
                if not pending:
                    break
                found = source.find_blocks(pending)
                still = []
                for block_hash in pending:
                    places = found.get(block_hash)
                    data = places and _read_verified(places, block_hash, self._length(block_hash), source_fds)
                    if data:
                        self._write_all(block_hash, data)
                        self.reused += 1
                    else:
                        still.append(block_hash)
                pending = still
        finally:
            for fd in source_fds.values():
                os.close(fd)

    # -- remote blocks --------------------------------------------------------------

    def missing(self) -> list[tuple[bytes, int]]:
        """(hash, length) of each block still needed, in file order."""
        return [(h, self._length(h)) for h in self._need]

    def accept(self, block_hash: bytes, offset: int, data: bytes | memoryview) -> Outcome:
        """Take one chunk of a block; chunks of a block must come in order from offset 0."""
        places = self._need.get(block_hash)
        if places is None:
            return Outcome.IGNORED
        length = self._length(block_hash)
        inc = self._incoming.get(block_hash)
        if offset == 0:
            inc = self._incoming[block_hash] = _Incoming(blake3.blake3(), 0, length)
        if inc is None or inc.received != offset or offset + len(data) > length:
            self._incoming.pop(block_hash, None)
            self.rejected += 1
            return Outcome.BAD
        part, index = places[0]
        os.pwrite(self._fd(part), data, index * part.entry.block_size + offset)
        inc.hasher.update(data)
        inc.received += len(data)
        if inc.received < length:
            return Outcome.PARTIAL
        del self._incoming[block_hash]
        if inc.hasher.digest() != block_hash:
            self.rejected += 1
            log.warning(
                "block %s of %s failed verification; asking again", block_hash.hex()[:16], part.entry.path
            )
            return Outcome.BAD
        self.received += 1
        copies = places[1:]
        if copies:
            data_all = os.pread(self._fd(part), length, index * part.entry.block_size)
            for other, other_index in copies:
                os.pwrite(self._fd(other), data_all, other_index * other.entry.block_size)
        self._mark_done(block_hash)
        return Outcome.DONE

    def describe(self, block_hash: bytes) -> str:
        """A block as people know it: its file and index."""
        places = self._need.get(block_hash)
        if not places:
            return f"block {block_hash.hex()[:16]}"
        part, index = places[0]
        return f"{part.entry.path}: block {index}"

    # -- results --------------------------------------------------------------------

    def take_ready(self) -> list[Finished]:
        """Files completed since the last call; their partial files are closed and complete."""
        ready, self._ready = self._ready, []
        return [Finished(p.entry, p.path, p.stat) for p in ready]

    @property
    def complete(self) -> bool:
        return not self._need

    def incomplete(self) -> list[FileEntry]:
        seen: dict[bytes, FileEntry] = {}
        for places in self._need.values():
            for part, _ in places:
                seen.setdefault(part.entry.digest, part.entry)
        return list(seen.values())

    def close(self) -> None:
        """Close files; partial files stay on disk to be resumed."""
        while self._open:
            os.close(self._open.popitem()[1])

    def __enter__(self) -> Assembly:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------

    def _length(self, block_hash: bytes) -> int:
        part, index = self._need[block_hash][0]
        return part.entry.block_length(index)

    def _write_all(self, block_hash: bytes, data: bytes) -> None:
        for part, index in self._need[block_hash]:
            os.pwrite(self._fd(part), data, index * part.entry.block_size)
        self._mark_done(block_hash)

    def _mark_done(self, block_hash: bytes) -> None:
        for part, index in self._need.pop(block_hash):
            part.remaining.discard(index)
            if not part.remaining:
                self._finish(part)

    def _finish(self, part: Partial) -> None:
        if not part.created or self.mode_for is not None:  # never created: an empty file, made now
            fd = self._fd(part)
            if self.mode_for is not None:
                os.chmod(fd, self.mode_for(part.entry))
                os.utime(fd, ns=(part.entry.mtime_ns, part.entry.mtime_ns))
                part.stat = os.fstat(fd)
        fd = self._open.pop(part.path, None)
        if fd is not None:
            os.close(fd)
        self._ready.append(part)

    def _fd(self, part: Partial) -> int:
        fd = self._open.get(part.path)
        if fd is not None:
            self._open.move_to_end(part.path)
            return fd
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        if not part.created:
            fd = os.open(part.path, flags | os.O_CREAT | os.O_TRUNC, 0o600)
            if part.entry.block_count > 1:
                os.ftruncate(fd, part.entry.size)  # sparse: blocks land anywhere, holes read as not done
            part.created = True
        else:
            try:
                fd = os.open(part.path, flags)
            except PermissionError:  # made read-only when finished, then left by a crash: ours to write
                os.chmod(part.path, 0o600)
                fd = os.open(part.path, flags)
        self._open[part.path] = fd
        if len(self._open) > self._max_open:
            os.close(self._open.popitem(last=False)[1])
        return fd


def _has_data(fd: int, offset: int, length: int) -> bool:
    """False if the range is a hole (never written) in a sparse file."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) < offset + length
    except OSError as exc:  # ENXIO: only holes from here on; anything else: cannot tell, so read
        return exc.errno != errno.ENXIO


def _read_verified(
    places: list[tuple[str, int, int]], block_hash: bytes, length: int, fds: OrderedDict[str, int]
) -> bytes | None:
    for path, offset, found_length in places:
        if found_length != length:
            continue
        fd = fds.get(path)
        if fd is None:
            try:
                fd = fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            if len(fds) > 16:
                os.close(fds.popitem(last=False)[1])
        with contextlib.suppress(OSError):
            data = os.pread(fd, length, offset)
            if len(data) == length and hash_block(data) == block_hash:
                return data
    return None
