"""The controller's side of the file synchroniser: publish projects, receive uploads, serve outputs.

Bulk data has its own socket and thread (`farm.filesync.FileServer`), so it never delays
heartbeats or dispatch on the job socket. Upload results arrive from that thread through
a queue the controller's loop drains.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Any

from farm.controller.fileroles import FileRoles, members
from farm.endpoints import files_bind
from farm.filesync import DEFAULT_LIMITS, HashCache, Manifest, UploadResult, build_manifest
from farm.filesync.localview import local_hint
from farm.filesync.parts import build_parts
from farm.filesync.scan import walk_files
from farm.filesync.sidefiles import side_files
from farm.filesync.tracker import SwarmFileServer
from farm.project import Project
from farm.security import ServerSecurity
from farm.words import counted

log = logging.getLogger(__name__)

#: bounds on one part of a run's published outputs (read at each publish; tests lower them)
OUTPUT_LIMITS = DEFAULT_LIMITS


class AssetService:
    def __init__(self, job_bind: str, state_dir: Path, security: ServerSecurity | None = None,
                 files_port: int | None = None) -> None:
        # CURVE applies here too; ZAP runs per ZeroMQ context, so use the authenticator's
        self.kinds: dict[str, str] = {}  # published tree -> "assets" or "outputs", for key roles
        self.output_parts: dict[str, list[str]] = {}  # an output folder's first tree -> its parts' trees
        self.server = SwarmFileServer(files_bind(job_bind, files_port),
                                      context=security.context if security else None,
                                      socket_setup=security.socket_setup if security else None,
                                      access=FileRoles(security, self.kinds.get) if security else None,
                                      members=members(security) if security else None).start()
        self.hashes = HashCache(state_dir / "hashes.sqlite")
        self.uploads: queue.Queue[UploadResult] = queue.Queue()

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def publish_project(self, tree: str, project: Project,
                        manifest: Manifest | None = None) -> tuple[dict[str, Any], Manifest]:
        """Serve the project's assets as `tree`; returns what agents need to fetch them, and the manifest.

        ``manifest``: the assets already hashed (off the loop, by `farm.controller.intake`).
        Raises `farm.filesync.SyncError` (e.g. a symlink leading out of the project).
        """
        if manifest is None:
            manifest = build_manifest(project.root, list(project.assets()), hash_cache=self.hashes)
        self.server.publish(tree, project.root, manifest)
        self.kinds[tree] = "assets"
        return {"tree": tree, "manifest": manifest.id, "files": len(manifest.entries),
                "bytes": manifest.total_size, "local": local_hint(project.root)}, manifest

    def publish_outputs(self, tree: str, folder: Path) -> list[str] | None:
        """Serve a finished run's output folder, for a remote submitter to download: all but
        hidden files and folders (a name starting with ``.``), which are a media type's scratch
        (an audio run's joins, GBs of PCM, stay there when the run is cancelled or failed).

        Returns the trees it is served as: ``tree``, then ``tree.2``, ``tree.3``... when it holds
        more than one manifest may (`OUTPUT_LIMITS`; a zoom-10 map's 1.4 million tiles are 7).
        An SQLite file's side files (``-wal``, ``-shm``: its media type left it open) are not served:
        beside a copy of the file they would corrupt it (`farm.filesync.sidefiles`)."""
        if not folder.is_dir():
            return None
        shown = [rel for rel in walk_files(folder) if not any(part.startswith(".") for part in rel.split("/"))]
        sides = side_files(shown)
        if sides:
            log.warning("%s: not serving %s (an SQLite file's side files, left open): %s", tree,
                        counted(len(sides), "file"), ", ".join(sorted(sides)[:6]))
            shown = [rel for rel in shown if rel not in sides]
        parts = build_parts(folder, shown, hash_cache=self.hashes, limits=OUTPUT_LIMITS)
        trees = [tree if i == 0 else f"{tree}.{i + 1}" for i in range(len(parts))]
        for name, manifest in zip(trees, parts, strict=True):
            self.server.publish(name, folder, manifest)
            self.kinds[name] = "outputs"
        for stale in self.output_parts.get(tree, [])[len(trees):]:  # published before with more parts
            self.unpublish(stale)
        self.output_parts[tree] = trees
        if len(trees) > 1:
            log.info("%s: %s served as %d parts", tree, counted(len(shown), "file"), len(trees))
        return trees

    def unpublish(self, tree: str) -> None:
        self.server.unpublish(tree)
        self.kinds.pop(tree, None)

    def expect_project(self, token: str, dest: Path, *, max_bytes: int | None = None,
                       max_files: int | None = None) -> None:
        """Receive a submitted project under ``token`` into ``dest``, refusing more than the bounds given."""
        self.server.expect_upload(token, dest, on_done=self.uploads.put, max_bytes=max_bytes, max_files=max_files)

    def finished_uploads(self) -> list[UploadResult]:
        done = []
        while True:
            try:
                done.append(self.uploads.get_nowait())
            except queue.Empty:
                return done

    def close(self) -> None:
        self.server.close()
        self.hashes.close()
