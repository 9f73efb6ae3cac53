"""``farm submit --watch``: render, then render again whenever what the jobs read changes.

Each round is an ordinary submit: jobs whose inputs did not change are reused from the
controller's job cache, so a round costs only the jobs an edit touched.

A file-system event only wakes the watcher; whether a round starts is decided by content.
`ProjectInputs` digests ``farm.toml`` and every asset (the files the jobs read, by the
project's ``[assets]`` rules); a round starts only when that set of digests differs from the
one the last round started with. So a ``touch``, an editor saving identical bytes, a file
matching ``[assets] exclude``, the run's own writes (outputs, ``.farm/``) and the file this
process's own output goes into (``farm submit --watch . > ./log``, ``| tee log``: never an
asset, see `farm.ownoutput`) start nothing.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path

import blake3
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from farm.errors import FarmError
from farm.ownoutput import FileId
from farm.project import PROJECT_FILE, STATE_DIR, load_project

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.5
SETTLE_LIMIT_S = 3.0  # a file written without pause (a log) must not hold the check off forever
_CHUNK = 1 << 20



class ProjectInputs:
    """Content digests of what a project's jobs read: its ``farm.toml`` and its assets.

    `fingerprint()` returns a hashable value that changes only when the contents (or the set)
    of those files change, or when the project stops (or starts) loading. Files in `skip`
    ((st_dev, st_ino) pairs) are left out. A file's digest is computed again only when its
    size, mtime, ctime or inode changed, so a quiet project costs one ``stat`` per file.
    """

    def __init__(self, project_dir: Path | str, output: str | None = None,
                 skip: set[FileId] | None = None) -> None:
        self.root = Path(project_dir)
        self.output = output
        self.skip = skip or set()
        self._digests: dict[str, tuple[tuple[int, int, int, int], bytes]] = {}

    def fingerprint(self) -> Hashable:
        try:
            project = load_project(self.root, output=self.output)
        except FarmError as exc:
            return ("invalid", str(exc))
        files = {PROJECT_FILE, *project.assets()}
        state = []
        for rel in sorted(files):
            digest = self._digest(rel)
            if digest is not None:
                state.append((rel, digest))
        self._digests = {rel: self._digests[rel] for rel, _ in state if rel in self._digests}
        return ("ok", tuple(state))

    def _digest(self, rel: str) -> bytes | None:
        path = self.root / rel
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in self.skip or not stat.S_ISREG(st.st_mode):
                return None
            key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            known = self._digests.get(rel)
            if known is not None and known[0] == key:
                return known[1]
            hasher = blake3.blake3()
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    hasher.update(chunk)
        except OSError as exc:  # vanished or unreadable between listing and reading: that is a state too
            return f"unreadable: {exc.strerror}".encode()
        digest = hasher.digest()
        self._digests[rel] = (key, digest)
        return digest


class _Wake(FileSystemEventHandler):
    """Sets `changed` on any event that may have changed a file outside the run's own folders."""

    def __init__(self, root: Path, ignore: tuple[str, ...]) -> None:
        self.root = root
        self.ignore = ignore
        self.changed = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            try:
                rel = Path(os.fsdecode(raw)).relative_to(self.root).as_posix()
            except ValueError:
                continue
            if rel.split("/", 1)[0].startswith("."):
                continue
            if any(rel == i or rel.startswith(i + "/") for i in self.ignore):
                continue
            self.changed.set()


def watch(root: Path, output: str, run_round: Callable[[], None], *, fingerprint: Callable[[], Hashable],
          stop: threading.Event | None = None, debounce: float = DEBOUNCE_S,
          settle_limit: float = SETTLE_LIMIT_S) -> int:
    """Call `run_round` now, then again whenever `fingerprint()` changes, until `stop` is set.

    File-system events under `root` (outside `output` and dot-folders such as ``.farm``) wake
    the watcher; after they settle for `debounce` seconds it compares `fingerprint()` with
    the value taken before the last round (waiting at most `settle_limit` seconds for a file
    that is written without pause) and starts a round only if they differ. Returns the
    number of rounds run.
    """
    stop = stop or threading.Event()
    wake = _Wake(root.resolve(), (output.strip("/"), STATE_DIR))
    observer = Observer()
    observer.schedule(wake, str(root.resolve()), recursive=True)
    observer.start()
    rounds = 0
    try:
        last = fingerprint()
        while not stop.is_set():
            rounds += 1
            run_round()
            while not stop.is_set():
                while not stop.is_set() and not wake.changed.wait(0.2):
                    pass
                settle_until = time.monotonic() + max(settle_limit, debounce)
                while wake.changed.wait(debounce) and time.monotonic() < settle_until:  # let edits settle
                    wake.changed.clear()
                wake.changed.clear()
                if stop.is_set():
                    break
                now = fingerprint()
                if now != last:
                    last = now
                    log.info("project changed; rendering again")
                    break
                log.debug("files changed, but nothing a job reads: no round")
    finally:
        observer.stop()
        observer.join()
    return rounds
