"""Load-time verdicts kept on disk, so that every process checking a project does not run ffmpeg again.

The split check (`farm_audio.splitcheck`) costs a few short ffmpeg runs, and the CLI, the
controller and every worker check each project they load (a worker trusts no one's
settings). Its verdict depends only on what the key names, this ffmpeg build and the code
that checks, so it is kept in ``$XDG_CACHE_HOME/farm/audio-verdicts/`` (0700): a worker's
first job then waits for nothing the controller already found out. The cache holds
verdicts, never settings or permissions: the allowlist and the formats are checked afresh
each time. A file that does not read back as a verdict is ignored and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from farm.paths import cache_dir

log = logging.getLogger(__name__)

_FOLDER = "audio-verdicts"
#: the modules whose code decides a verdict: a change to any of them is a new key
_CODE = ("splitcheck.py", "render.py", "segments.py", "chain.py", "verdicts.py", "checkcache.py", "probe.py",
         "validate.py")


@lru_cache(maxsize=4)
def _identity(exe: str) -> str:
    """This ffmpeg build and this checking code, as one digest."""
    hasher = hashlib.sha256()
    stat = os.stat(exe)
    hasher.update(f"{exe}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    here = Path(__file__).parent
    for name in _CODE:
        hasher.update((here / name).read_bytes())
    return hasher.hexdigest()


def _path(exe: str, key: tuple[Any, ...], folder: str) -> Path:
    digest = hashlib.sha256(json.dumps([_identity(exe), *key]).encode()).hexdigest()
    return cache_dir() / folder / f"{digest}.json"


def load(exe: str, key: tuple[Any, ...], folder: str = _FOLDER) -> dict[str, Any] | None:
    """The verdict stored for ``key`` checked with ``exe`` (in ``folder`` of the cache), or None."""
    try:
        found = json.loads(_path(exe, key, folder).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def store(exe: str, key: tuple[Any, ...], verdict: dict[str, Any], folder: str = _FOLDER) -> None:
    """Keep ``verdict`` for ``key``; a cache that cannot be written only costs the next check."""
    path = _path(exe, key, folder)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(verdict, f)
        os.replace(temp, path)
    except OSError as exc:
        log.debug("cannot keep a verdict in %s: %s", path.parent, exc)
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(temp)
