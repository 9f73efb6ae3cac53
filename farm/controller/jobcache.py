"""Finished jobs' outputs, kept by cache key, so an unchanged job is never rendered twice.

A cache key is a hash of everything a job's outputs depend on: the media type and its
plugin's version, the settings it declares relevant (`MediaType.cache_settings`), the job's
key and params, and the digests of the assets it reads. The journal maps a key to the job's
result; this folder holds its output files (hard links to what was collated, when the
filesystem allows). A re-submit, a `--watch` round, or a wider zoom range re-renders only
the jobs whose key is new; the others are collated again from here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import msgpack

from farm.filesync import Manifest
from farm.journal import Journal
from farm.mediatype import Job, MediaType
from farm.paths import safe_relpath
from farm.project import PROJECT_FILE

log = logging.getLogger(__name__)


def assets_digest(manifest: Manifest) -> str:
    """All assets but the project file: its settings enter the key through `cache_settings`."""
    listed = [[e.path, e.digest.hex()] for e in manifest.entries if e.path != PROJECT_FILE]
    return hashlib.sha256(msgpack.packb(listed)).hexdigest()


def cache_key(media: MediaType, version: str | None, settings: dict[str, Any], job: Job,
              manifest: Manifest | None, all_assets: str | None, deps: dict[str, Any]) -> str | None:
    """The job's cache key, or None if its media type never reuses results.

    `deps` are the results of the jobs it depends on: what they tell it is an input too.
    """
    relevant = media.cache_settings(settings)
    if relevant is None or manifest is None:
        return None
    if job.inputs is None:
        inputs: Any = all_assets
    else:
        inputs = [[p, e.digest.hex() if (e := manifest.get(p)) else None] for p in sorted(job.inputs)]
    blob = msgpack.packb([media.name, version, relevant, job.key, job.params, inputs, deps], use_bin_type=True,
                         default=str)
    return hashlib.sha256(blob).hexdigest()


class JobCache:
    def __init__(self, folder: Path, journal: Journal) -> None:
        self.folder = folder
        self.journal = journal

    def _dir(self, key: str) -> Path:
        return self.folder / key[:2] / key

    def store(self, key: str, outputs: dict[str, Path]) -> None:
        """Keep a job's outputs (before collate moves them); atomic: all or nothing."""
        final = self._dir(key)
        if final.exists():
            return
        tmp = self.folder / "tmp" / uuid.uuid4().hex
        for name, path in outputs.items():
            target = tmp / safe_relpath(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
        tmp.mkdir(parents=True, exist_ok=True)  # a job with no outputs is cached too
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(final)
        except OSError:  # stored meanwhile
            shutil.rmtree(tmp, ignore_errors=True)

    def restore(self, key: str, staging: Path) -> tuple[Any, dict[str, Path]] | None:
        """A finished job's result and its outputs staged for collate, or None if not cached."""
        hit = self.journal.lookup_cache(key)
        stored = self._dir(key)
        if hit is None or not stored.is_dir():
            return None
        outputs = {}
        for path in sorted(stored.rglob("*")):
            if path.is_file():
                name = path.relative_to(stored).as_posix()
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copy2(path, target)
                outputs[name] = target
        return hit.result, outputs
