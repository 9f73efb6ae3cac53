"""The manifests a cache has seen, one file each under ``manifests/``, so an unchanged tree
re-syncs in one exchange; bounded, shared by the processes that share the cache."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

from farm.filesync.errors import ManifestError
from farm.filesync.manifest import Manifest

MAX_MANIFESTS = 256  # files kept; a pruned one costs one full manifest transfer on its next sync
PARSED = 8  # recent manifests kept parsed: an unchanged re-sync then decodes nothing


class ManifestFiles:
    """``save`` and ``load`` manifests by id in `folder` (made by the caller, private)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._parsed: OrderedDict[str, Manifest] = OrderedDict()

    def save(self, manifest: Manifest) -> None:
        self._remember(manifest)
        path = self.folder / manifest.id
        if path.exists():
            return
        tmp = path.with_name(f".{manifest.id}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(manifest.to_bytes())
        os.replace(tmp, path)
        self._prune()

    def load(self, manifest_id: str) -> Manifest | None:
        """The manifest with this id, or None if unknown, unreadable or not what its name says."""
        with self._lock:
            known = self._parsed.get(manifest_id)
        if known is not None:
            return known
        if not manifest_id.isalnum():
            return None
        try:
            manifest = Manifest.from_bytes((self.folder / manifest_id).read_bytes())
        except (OSError, ManifestError):
            return None
        if manifest.id != manifest_id:
            return None
        self._remember(manifest)
        return manifest

    def _prune(self) -> None:
        """Keep the newest `MAX_MANIFESTS`: a peer sending ever new trees cannot fill the disk."""
        # another process's ".<id>...tmp" is its write in flight: never count, stat or remove it
        entries = [e for e in os.scandir(self.folder) if not e.name.startswith(".")]
        if len(entries) <= MAX_MANIFESTS:
            return
        ages = []
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):  # pruned by another process meanwhile
                ages.append((entry.stat().st_mtime_ns, entry.path))
        ages.sort()
        for _, path in ages[: len(ages) - MAX_MANIFESTS]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _remember(self, manifest: Manifest) -> None:
        with self._lock:
            self._parsed[manifest.id] = manifest
            self._parsed.move_to_end(manifest.id)
            while len(self._parsed) > PARSED:
                self._parsed.popitem(last=False)
