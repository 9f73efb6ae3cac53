"""Bringing a project's assets to this node, in a background thread.

The agent's loop must keep answering heartbeats while gigabytes arrive, so each project
is fetched by its own thread (with its own ZeroMQ socket) into the node's content-addressed
cache and materialised (hard links) into a folder of the agent's; the loop collects the
outcome from a queue. Jobs of a project wait in the agent's queue until it is ready.

An agent started with ``local=True`` (the embedded farm's; ``farm agent --local-assets``)
that proves it sees the controller's own folder places the files from there instead, with no
byte copied and nothing added to the cache (`farm.filesync.localview`).
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from farm.agent.trust import project_folder
from farm.causes import cause
from farm.filesync import FileClient, Store
from farm.filesync.localview import LocalView
from farm.filesync.manifest import Manifest
from farm.filesync.store import CacheFull

if TYPE_CHECKING:
    from farm.agent.peering import PeerNode

log = logging.getLogger(__name__)


@dataclass
class Synced:
    project: str
    folder: Path | None  # None: it failed
    error: str | None = None
    node_fault: bool = False  # it failed for want of room here (cache limit, full disk), not the project's


def sync_summary(client: FileClient, manifest: Manifest) -> str:
    """Where the blocks of a synced tree came from; the parts add up to the tree's blocks (those
    of its distinct files), except identical blocks fetched once for several places."""
    counters = client.counters
    from_peers = getattr(client, "peer_counters", None)
    total = sum(e.block_count for e in manifest.unique_files())
    return (f"{counters.blocks_fetched} blocks fetched from the controller, "
            f"{from_peers.blocks_fetched if from_peers else 0} from peers, "
            f"{counters.blocks_resumed} resumed from a partial download, "
            f"{counters.blocks_reused + counters.blocks_cached} reused from the cache, "
            f"of the tree's {total}")


def lacks_room(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says this node lacks room: the cache's limit, a full disk."""
    return cause(exc, lambda seen: isinstance(seen, CacheFull) or (
        isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT))) is not None


class AssetSync:
    def __init__(self, cache_dir: Path | None, max_bytes: int | None, scratch: Path,
                 socket_setup: Callable[[zmq.Socket], None] | None = None, *, local: bool = False,
                 peers: bool = True, agent: str | None = None) -> None:
        """``peers``: fetch blocks from other agents and serve ours to them (`farm.agent.peering`);
        ``agent``: this agent's id, for the tracker."""
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self.scratch = scratch
        self.socket_setup = socket_setup
        self.done: queue.Queue[Synced] = queue.Queue()
        self.busy: set[str] = set()
        self.local = local
        self.views: dict[str, LocalView] = {}  # projects placed from the controller's own folder
        self.peers: PeerNode | None = None
        if peers:
            # imported here: an embedded agent (ipc://, where peers never run) skips its modules' 0.05 s
            from farm.agent.peering import PeerNode

            self.peers = PeerNode(socket_setup, agent)

    def start(self, project: str, endpoint: str, tree: str, hint: object = None) -> None:
        """Bring ``tree`` here; ``hint`` is the controller's `local_hint`, used only if ``local``."""
        if project in self.busy:
            return
        self.busy.add(project)
        self.views.pop(project, None)
        folder = project_folder(self.scratch, project)
        hint = hint if self.local else None
        threading.Thread(target=self._fetch, args=(project, endpoint, tree, folder, hint),
                         name=f"farm-sync-{project}", daemon=True).start()

    def changed(self, project: str) -> str | None:
        """Why a project placed from the controller's folder no longer holds what its jobs were
        given (a file edited in place), or None; the project is then fetched afresh."""
        view = self.views.get(project)
        why = view.changed() if view is not None else None
        if why is not None:
            del self.views[project]
        return why

    def _fetch(self, project: str, endpoint: str, tree: str, folder: Path, hint: object) -> None:
        try:
            if hint is not None:
                with FileClient(endpoint, socket_setup=self.socket_setup) as client:
                    view = LocalView.make(hint, client.fetch_manifest(tree), folder)
                if view is not None:
                    log.info("project %s placed from the controller's folder: %d reflinked, %d hard-linked",
                             project, view.reflinked, len(view.linked))
                    self.views[project] = view
                    self.done.put(Synced(project, folder))
                    return
            limit = {"max_bytes": self.max_bytes} if self.max_bytes else {}
            store = Store(self.cache_dir, **limit)
            try:
                with self._client(endpoint, store) as client:
                    manifest = client.sync(tree, folder)
                    log.info("project %s synced: %s", project, sync_summary(client, manifest))
            finally:
                store.close()
            self.done.put(Synced(project, folder))
        except Exception as exc:  # reported to the controller as failed jobs: never fatal here
            log.warning("cannot fetch project %s: %s", project, exc)
            self.done.put(Synced(project, None, f"{type(exc).__name__}: {exc}", lacks_room(exc)))

    def _client(self, endpoint: str, store: Store) -> FileClient:
        if self.peers is not None:
            return self.peers.client(endpoint, store)
        return FileClient(endpoint, store, socket_setup=self.socket_setup)

    def close(self) -> None:
        if self.peers is not None:
            self.peers.close()

    def finished(self) -> list[Synced]:
        if not self.busy:  # nothing fetching: nothing can have finished (asked every turn of the loop)
            return []
        out = []
        while True:
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return out
            self.busy.discard(item.project)
            out.append(item)
