"""``farm submit --watch``: render, then render again whenever the project's files change.

Each round is an ordinary submit: jobs whose inputs did not change are reused from the
controller's job cache, so a round costs only the jobs an edit touched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from farm.project import STATE_DIR

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.5


class _Changes(FileSystemEventHandler):
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
                rel = Path(str(raw)).relative_to(self.root).as_posix()
            except ValueError:
                continue
            first = rel.split("/", 1)[0]
            if first.startswith(".") or first in self.ignore:
                continue
            self.changed.set()


def watch(root: Path, output: str, run_round: Callable[[], None], *, stop: threading.Event | None = None,
          debounce: float = DEBOUNCE_S) -> None:
    """Call `run_round` now and after every (debounced) change under `root`, until `stop` is set."""
    stop = stop or threading.Event()
    changes = _Changes(root, (output.split("/", 1)[0], STATE_DIR))
    observer = Observer()
    observer.schedule(changes, str(root), recursive=True)
    observer.start()
    try:
        while not stop.is_set():
            changes.changed.clear()
            run_round()
            while not stop.is_set() and not changes.changed.wait(0.2):
                pass
            while changes.changed.wait(debounce):  # wait for the edits to settle
                changes.changed.clear()
            if not stop.is_set():
                log.info("project changed; rendering again")
    finally:
        observer.stop()
        observer.join()
