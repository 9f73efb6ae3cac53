"""The record a finalize leaves of the outputs it wrote, so that running it again finds them.

finalize removes the joins once the outputs are written; the controller journals the run's
end a moment later. A controller killed in between resumes a run whose jobs are all done and
whose joins are gone: its finalize returns the outputs this record names instead, if they are
still the files it wrote (same size, same modification time). Written after the outputs are
on disk and before the joins go; removed once the run's end is journaled (the controller then
empties a done run's state, and `farm_audio.scratch` removes what it held), or when a run of
these settings starts joining again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path


def record_path(output_dir: Path, name: str, fingerprint: str) -> Path:
    """Named by the settings, so that another run's record never applies."""
    return output_dir / f".{name}.finished.{fingerprint}.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(record: Path, outputs: Sequence[Path]) -> None:
    """Record ``outputs`` (in ``record``'s folder) once they are durable; atomic."""
    entries = []
    for path in outputs:
        _fsync(path)  # the record must never name outputs a power cut could still lose
        st = path.stat()
        entries.append({"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    temp = record.with_name(record.name + ".part")
    temp.write_text(json.dumps(entries))
    _fsync(temp)
    temp.replace(record)
    _fsync(record.parent)


def read(record: Path) -> list[Path] | None:
    """The outputs ``record`` names, if it exists and each is still the file that was written."""
    try:
        entries = json.loads(record.read_text())
        paths = []
        for entry in entries:
            path = record.parent / entry["name"]
            if Path(entry["name"]).name != entry["name"]:
                return None
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
                return None
            paths.append(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return paths or None


def remove(record: Path) -> None:
    """A run that joins anew encodes anew: an earlier run's record no longer applies."""
    record.unlink(missing_ok=True)
    record.with_name(record.name + ".part").unlink(missing_ok=True)
