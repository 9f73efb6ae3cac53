"""One hierarchy of errors under `FarmError`.

The CLI catches `FarmError` once, prints it and exits 1; anything else is a bug.
"""

from __future__ import annotations

from pathlib import Path


class FarmError(Exception):
    """Root of every error farm raises on purpose."""


class ProjectError(FarmError):
    """A project (its `farm.toml` or its assets) is malformed.

    Carries the place: the file, the table and key, and the line where known,
    so the message reads like a compiler's: ``farm.toml:7: [maptiles] zoom: ...``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.key = key
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.file or ""
        if self.file and self.line:
            where += f":{self.line}"
        parts = [p for p in (where, self.key) if p]
        return ": ".join([*parts, self.message])


class UnknownMediaType(ProjectError):
    """The project names a media type no installed plugin provides."""


class PluginError(FarmError):
    """A plugin failed to load or broke its contract."""


class RenderError(FarmError):
    """A job failed in a way the plugin understands (raise it for a clean message).

    The job is tried again, on another agent where there is one, up to ``[jobs] max_attempts``.
    """


class JobFailedForGood(RenderError):
    """A job that no retry can fix (a corrupt or unreadable input): it fails at once, not retried.

    Raise it from `render`; the message reaches the user as the job's error. Use `RenderError`
    when another attempt, or another node, might succeed.
    """


class RendererMissing(FarmError):
    """A media type's renderer (Mapnik, Blender, ffmpeg) is not installed here."""


class ProtocolError(FarmError):
    """A network message is malformed, oversized or of the wrong shape."""


class ConnectionLost(FarmError):
    """The other end stopped answering."""


class ControlError(FarmError):
    """The controller refused a steering request or a query (`farm.client.Client.pause`, `.jobs`, ...).

    ``code`` says what kind of refusal, for callers that map it (the HTTP API: 404, 400, 409):
    ``"not_found"`` (no such project, agent or job), ``"bad_request"`` (a malformed request),
    ``"conflict"`` (not possible in the current state, e.g. resuming a run that is not paused),
    ``"finalizing"`` (a cancel of a run whose jobs are done while its final outputs are written:
    it ends as done or failed; 409 too), ``"controller_disk"`` (the controller cannot write its own
    state or output folder: a disk full or read-only; 503).
    """

    CODES = ("not_found", "bad_request", "conflict", "finalizing", "controller_disk")

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
