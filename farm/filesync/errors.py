"""Errors of the file synchroniser, all under `SyncError` (a `FarmError`)."""

from __future__ import annotations

from farm.errors import FarmError, ProtocolError
from farm.paths import UnsafePath

#: the file server's words for a published file edited since: every fetch of it fails the same way,
#: so an agent that reads them fails its jobs for good, not once an attempt (farm.agent.agent)
SOURCE_CHANGED = "changed since it was published"
EDITED = ("edited after its run was submitted? Submit the project again "
          "(farm submit --watch re-renders on edits)")


def source_edited(error: str) -> bool:
    """A fetch's error says a published file was edited since (the file server's `SOURCE_CHANGED`)."""
    return SOURCE_CHANGED in error


class SyncError(FarmError):
    """A tree could not be scanned, stored, sent or received."""


class ManifestError(SyncError, ProtocolError):
    """A manifest is malformed, inconsistent or over its limits."""


class UnsafeFile(SyncError, UnsafePath):
    """A path or file that must not be synchronised.

    Absolute paths, ``..``, symlinks leading out of their root, device files, sockets
    and fifos. Also an `UnsafePath`, so one ``except UnsafePath`` catches both.
    """


class VerifyError(SyncError):
    """Bytes did not match their hash, again and again: the file is reported as failed."""


class TransferError(SyncError):
    """The other side refused a request, broke the protocol or stopped answering."""


class DiskRefused(TransferError):
    """The receiving side's own disk refused an upload (full, read-only, failing): no fault of the
    sender's, nor worth sending again as it stands."""


class NoAnswer(TransferError):
    """The file server did not answer in time (stopped, restarting, or gone): worth trying again."""
