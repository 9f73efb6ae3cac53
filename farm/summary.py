"""The end of a run as a client sees it (`Summary`), and the errors of a follow or download given up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from farm.errors import ConnectionLost, FarmError, ProtocolError


class RunLost(ConnectionLost):
    """Following run `run_id` was given up: the controller did not come back in time, or forgot the run."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class DownloadLost(RunLost):
    """Run `run_id` ended, but fetching its outputs was given up: its controller did not come back
    in time, forgot the run, or no longer serves them."""


class DiskFull(FarmError):
    """Run `run_id` ended, but its outputs did not fit: no space left on the device of `folder` (where
    they go, or the download cache). What was written whole stays; nothing half-written does."""

    code = "disk_full"

    def __init__(self, message: str, run_id: str, folder: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.folder = folder


@dataclass
class Summary:
    """The end of a run, as `farm submit --json` prints it."""

    project: str
    media_type: str
    state: str
    total: int
    done: int
    failed: int
    reused: int
    elapsed_s: float
    outputs: list[str]
    output_dir: str
    failures: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    id: str = ""
    download: str | None = None  # the controller serves the outputs as this tree (remote submits)
    download_parts: list[str] = field(default_factory=list)  # all its trees, when the outputs are in parts
    download_error: str | None = None  # why the controller does not serve the outputs
    already: bool = False  # a cancel found the run finished already: nothing was cancelled
    notes: list[str] = field(default_factory=list)  # its collates' and finalize's warnings (controller.report)
    downloaded: list[str] | None = None  # files `download` brought, relative to output_dir (not on the wire)
    code: str | None = None  # what stopped it, for scripts: "controller_disk", "output_removed"
    resumed: int = 0  # of `done`: done before a controller restart or an interrupted embedded run

    @property
    def ok(self) -> bool:
        return self.state == "done" and not self.failed and not self.error

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Summary:
        jobs = data["jobs"]
        return cls(project=data["project"], media_type=data["media_type"], state=data["state"],
                   total=jobs["total"], done=jobs["done"], failed=jobs["failed"], reused=jobs.get("reused", 0),
                   resumed=int(jobs.get("resumed") or 0),
                   elapsed_s=data["elapsed_s"], outputs=list(data["outputs"]), output_dir=data["output_dir"],
                   failures=list(data.get("failures") or []), error=data.get("error"), id=data.get("id", ""),
                   download=data.get("download"), notes=[str(n) for n in data.get("notes") or ()],
                   download_parts=_parts(data.get("download_parts")),
                   download_error=str(data["download_error"]) if data.get("download_error") else None,
                   code=str(data["code"]) if data.get("code") else None)

    def parts(self) -> list[str]:
        """The trees the outputs are served as, fetched in turn (one unless there are too many files
        for one manifest: each part is checked within the file service's limits)."""
        return self.download_parts or ([self.download] if self.download else [])

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "media_type": self.media_type,
            "state": self.state,
            "jobs": {"total": self.total, "done": self.done, "failed": self.failed, "reused": self.reused,
                     "resumed": self.resumed},
            "elapsed_s": self.elapsed_s,
            "outputs": self.outputs,
            "failures": self.failures,
            "error": self.error,
            **({"code": self.code} if self.code else {}),
            "notes": self.notes,
        }


MAX_PARTS = 10_000  # trees one run's outputs may be served as (each within the file service's limits)


def _parts(value: Any) -> list[str]:
    if not value:
        return []
    if not isinstance(value, list) or len(value) > MAX_PARTS or not all(isinstance(t, str) for t in value):
        raise ProtocolError(f"a summary's download_parts must be a list of at most {MAX_PARTS} tree names")
    return value
