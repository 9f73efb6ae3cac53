"""farm's in-process ZeroMQ file synchroniser.

One mechanism for every direction: controller to agents (a project's assets), agents
to controller (job outputs), submit client to a remote controller (a project).

- `build_manifest` scans a tree into a `Manifest` (per-block blake3 hashes; a
  `HashCache` skips unchanged files).
- `FileServer` (controller side, own thread and ROUTER socket) serves published trees
  and receives expected uploads.
- `FileClient` (DEALER) fetches a tree into a `Store` (the agent's content-addressed
  cache) and materialises it into a job folder, or uploads a local tree.

See docs/filesync.md for the protocol, guarantees and figures.
"""

from farm.filesync.client import ClientCounters, FileClient, Progress
from farm.filesync.errors import ManifestError, NoAnswer, SyncError, TransferError, UnsafeFile, VerifyError
from farm.filesync.hashcache import HashCache
from farm.filesync.limits import DEFAULT_LIMITS, Limits
from farm.filesync.manifest import FileEntry, Manifest
from farm.filesync.materialize import MaterializeStats, MissingFromCache
from farm.filesync.receiver import UploadResult
from farm.filesync.scan import build_manifest
from farm.filesync.server import FileServer, ServerCounters
from farm.filesync.store import DEFAULT_MAX_BYTES, Store, default_cache_dir

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_BYTES",
    "ClientCounters",
    "FileClient",
    "FileEntry",
    "FileServer",
    "HashCache",
    "Limits",
    "Manifest",
    "ManifestError",
    "MaterializeStats",
    "MissingFromCache",
    "NoAnswer",
    "Progress",
    "ServerCounters",
    "Store",
    "SyncError",
    "TransferError",
    "UnsafeFile",
    "UploadResult",
    "VerifyError",
    "build_manifest",
    "default_cache_dir",
]
