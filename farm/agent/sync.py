"""Bringing a project's assets to this node, in a background thread.

The agent's loop must keep answering heartbeats while gigabytes arrive, so each project
is fetched by its own thread (with its own ZeroMQ socket) into the node's content-addressed
cache and materialised (hard links) into a folder of the agent's; the loop collects the
outcome from a queue. Jobs of a project wait in the agent's queue until it is ready.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq

from farm.agent.trust import project_folder
from farm.filesync import FileClient, Store

log = logging.getLogger(__name__)


@dataclass
class Synced:
    project: str
    folder: Path | None  # None: it failed
    error: str | None = None


class AssetSync:
    def __init__(self, cache_dir: Path | None, max_bytes: int | None, scratch: Path,
                 socket_setup: Callable[[zmq.Socket], None] | None = None) -> None:
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self.scratch = scratch
        self.socket_setup = socket_setup
        self.done: queue.Queue[Synced] = queue.Queue()
        self.busy: set[str] = set()

    def start(self, project: str, endpoint: str, tree: str) -> None:
        if project in self.busy:
            return
        self.busy.add(project)
        folder = project_folder(self.scratch, project)
        threading.Thread(target=self._fetch, args=(project, endpoint, tree, folder),
                         name=f"farm-sync-{project}", daemon=True).start()

    def _fetch(self, project: str, endpoint: str, tree: str, folder: Path) -> None:
        try:
            store = Store(self.cache_dir, max_bytes=self.max_bytes) if self.max_bytes else Store(self.cache_dir)
            try:
                with FileClient(endpoint, store, socket_setup=self.socket_setup) as client:
                    client.sync(tree, folder)
                    log.info("project %s synced: %d blocks fetched, %d reused from the cache", project,
                             client.counters.blocks_fetched, client.counters.blocks_reused)
            finally:
                store.close()
            self.done.put(Synced(project, folder))
        except Exception as exc:  # reported to the controller as failed jobs: never fatal here
            log.warning("cannot fetch project %s: %s", project, exc)
            self.done.put(Synced(project, None, f"{type(exc).__name__}: {exc}"))

    def finished(self) -> list[Synced]:
        out = []
        while True:
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return out
            self.busy.discard(item.project)
            out.append(item)
