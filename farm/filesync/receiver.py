"""The receiving end of an upload: job outputs from agents, a project from a submit client.

An upload is expected by token before it may start (`FileServer.expect_upload`). The
sender offers a manifest; the receiver answers with the blocks it lacks (blocks of
published trees and of the cache are reused, verified); chunks are verified as they
arrive; on commit, files are renamed from a temporary folder inside ``dest`` into
place. A block failing verification `MAX_BAD` times, an unsafe path or a limit
exceeded fails the upload, and the failure is reported through ``on_done``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.filesync.assembly import Assembly, BlockSource, Outcome
from farm.filesync.errors import DiskRefused, SyncError, UnsafeFile, VerifyError
from farm.filesync.limits import Limits
from farm.filesync.manifest import Manifest
from farm.filesync.resolve import Resolver
from farm.filesync.wire import Frame, view

log = logging.getLogger(__name__)

MAX_BAD = 3
#: the receiving disk's own failings (not the sender's): full, over quota, read-only, failing
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


@dataclass(frozen=True)
class UploadResult:
    """How an upload ended. ``ok`` False carries the reason in ``error``; ``disk``: the OS error when
    the receiving disk refused it (`DISK_ERRNOS`)."""

    token: str
    ok: bool
    dest: Path
    manifest: Manifest | None = None
    error: str | None = None
    disk: OSError | None = None


OnDone = Callable[[UploadResult], None]


class Upload:
    """State of one expected upload into ``dest``."""

    def __init__(
        self,
        token: str,
        dest: Path,
        *,
        limits: Limits,
        sources: Sequence[BlockSource],
        on_done: OnDone | None = None,
        max_bytes: int | None = None,
        max_files: int | None = None,
    ) -> None:
        self.token = token
        self.dest = Path(dest)
        self.limits = limits
        self.sources = sources
        self.on_done = on_done
        self.max_bytes = limits.max_total_size if max_bytes is None else max_bytes
        self.max_files = limits.max_files if max_files is None else max_files
        self.work_dir = self.dest / f".farm-upload-{hashlib.sha256(token.encode()).hexdigest()[:16]}"
        self.manifest: Manifest | None = None
        self.result: UploadResult | None = None
        self._assembly: Assembly | None = None
        self._ready: dict[bytes, Path] = {}
        self._bad: Counter[bytes] = Counter()
        self._disk: OSError | None = None

    def offer(self, raw: Frame) -> bytes:
        """Take the sender's manifest; returns the concatenated hashes of the blocks to send."""
        manifest = Manifest.from_bytes(view(raw), self.limits)
        if len(manifest) > self.max_files:
            raise SyncError(f"upload lists {len(manifest)} files, more than the {self.max_files} allowed")
        if manifest.total_size > self.max_bytes:
            raise SyncError(
                f"upload holds {manifest.total_size} bytes, more than the {self.max_bytes} allowed"
            )
        resolver = Resolver(self.dest)
        for entry in manifest:
            if entry.path.startswith(".farm-upload-"):
                raise UnsafeFile(f"{entry.path}: names starting with .farm-upload- are reserved")
            resolver.path(entry.path, follow=False)
        self.close()
        self.manifest = manifest
        self._ready = {}
        with self._own_disk():
            self.dest.mkdir(parents=True, exist_ok=True)
            self._assembly = Assembly(manifest.unique_files(), self.work_dir, self.sources)
            self._assembly.prepare()
        self._collect()
        return b"".join(h for h, _ in self._assembly.missing())

    def put(self, items: Sequence[tuple[bytes, int, Frame]]) -> list[bytes]:
        """Write chunks; returns the hashes of blocks that failed verification (to send again)."""
        if self._assembly is None:
            raise SyncError("put before offer: offer a manifest first")
        bad = []
        for block_hash, offset, data in items:
            with self._own_disk():
                outcome = self._assembly.accept(block_hash, offset, view(data))
            if outcome is Outcome.BAD:
                self._bad[block_hash] += 1
                if self._bad[block_hash] >= MAX_BAD:
                    where = self._assembly.describe(block_hash)
                    raise VerifyError(f"{where} failed verification {MAX_BAD} times")
                bad.append(block_hash)
        self._collect()
        return bad

    def missing(self) -> int | None:
        """Blocks still to receive, or None before an offer."""
        return None if self._assembly is None else len(self._assembly.missing())

    def commit(self) -> UploadResult:
        """Move the complete files into ``dest`` (check `missing` is 0 first)."""
        assert self._assembly is not None and self.manifest is not None and self._assembly.complete
        with self._own_disk():
            return self._place()

    def _place(self) -> UploadResult:
        assert self._assembly is not None and self.manifest is not None
        self._assembly.close()
        placed: dict[bytes, str] = {}
        resolver = Resolver(self.dest)  # afresh: the folder may have changed since the offer
        for entry in self.manifest:
            target = resolver.path(entry.path, follow=False)  # a rename replaces a link, never follows it
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if entry.digest in placed:  # same content twice: a copy, so editing one leaves the other
                tmp = self.work_dir / f"copy-{entry.digest.hex()}"
                shutil.copyfile(placed[entry.digest], tmp)
            else:
                tmp = self._ready[entry.digest]
            os.chmod(tmp, entry.mode)
            os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
            if os.path.isdir(target) and not os.path.islink(target):
                raise SyncError(f"{entry.path}: a folder is in the way in {self.dest}")
            os.replace(tmp, target)
            placed.setdefault(entry.digest, target)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return self._finish(UploadResult(self.token, True, self.dest, self.manifest))

    def fail(self, error: str) -> UploadResult:
        self.close()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        log.warning("upload %s into %s failed: %s", self.token, self.dest, error)
        return self._finish(UploadResult(self.token, False, self.dest, self.manifest, error, self._disk))

    def close(self) -> None:
        if self._assembly is not None:
            self._assembly.close()

    @contextlib.contextmanager
    def _own_disk(self) -> Iterator[None]:
        """An OS error of the receiving disk's own (`DISK_ERRNOS`) as a `DiskRefused` (`fail` names dest)."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise
            self._disk = exc
            raise DiskRefused(f"the receiving disk refused it: {exc.strerror} "
                              f"({errno.errorcode.get(exc.errno, exc.errno)})") from None

    def _finish(self, result: UploadResult) -> UploadResult:
        self.result = result
        if self.on_done is not None:
            try:
                self.on_done(result)
            except Exception:
                log.exception("upload callback for %s failed", self.token)
        return result

    def _collect(self) -> None:
        assert self._assembly is not None
        for entry, path, _ in self._assembly.take_ready():
            self._ready[entry.digest] = path
