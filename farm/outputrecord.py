"""The final outputs a remote run left in a project's output folder, so the next run replaces them.

A remote run's outputs are downloaded into the local output folder, beside whatever earlier
runs left there. A final output an earlier run made and the newest run did not make again (the
video after a run whose frames failed, a contact sheet after it was turned off) would look like
the newest run's. So each remote run's final outputs are recorded in the project's state folder,
and the next remote run removes those of them it did not list, if they are still the files that
were downloaded (same size and modification time: a file the user changed stays). On the
embedded farm the media type's finalize writes in the project's own folder and sees what an
earlier run left: after a failed run, `farm_frames` removes its video and contact sheet and
`farm_audio` its encoded files, with `remove_earlier`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from farm.errors import FarmError
from farm.linkcheck import refuse_links
from farm.paths import UnsafePath, safe_relpath
from farm.project import STATE_DIR, Project

log = logging.getLogger(__name__)

RECORD = "remote-outputs.json"  # in the project's state folder


def replace_earlier(project: Project, outputs: list[str]) -> list[str]:
    """Remove the final outputs the previous remote run of ``project`` recorded and ``outputs``
    (this run's, paths in the local output folder) does not name, then record this run's.

    Returns the removed files, relative to the output folder. Never raises for the record
    itself (unreadable, unwritable): the run's outputs are what matters, so that is logged.
    """
    out = project.output_dir
    record = project.root / STATE_DIR / RECORD
    made = {os.path.relpath(p, out) for p in outputs if Path(p).is_relative_to(out)}
    removed = []
    for entry in _read(record, project.output):
        name = entry["name"]
        if name in made:
            continue
        path = out / name
        try:
            found = path.lstat()
            if found.st_size == entry["size"] and found.st_mtime_ns == entry["mtime_ns"] and path.is_file():
                path.unlink()
                removed.append(name)
        except OSError:  # gone already, or not ours to remove: left as it is
            continue
    if removed:
        log.warning("%s: removed %s from %s: an earlier run made %s, and this run did not make %s again",
                    project.name, ", ".join(removed), out, "them" if len(removed) > 1 else "it",
                    "them" if len(removed) > 1 else "it")
    try:
        _write(project, record, out, sorted(made))
    except (OSError, FarmError) as exc:  # FarmError: a link in the state folder
        log.warning("%s: cannot record this run's outputs in %s: %s", project.name, record, exc)
    return removed


def remove_earlier(paths: Iterable[Path]) -> list[str]:
    """Remove those of ``paths`` that exist (a media type's final outputs an earlier run left,
    which a failed run did not make again); returns their names. One that cannot be removed is
    logged, not raised: the run's own warning says why it made none, this says why one is there."""
    removed = []
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove %s, which an earlier run made: %s", path, exc)
            continue
        removed.append(path.name)
    return removed


def _read(record: Path, output: str) -> list[dict]:
    """The entries of the record, if it is one of this output folder; [] otherwise."""
    try:
        data = json.loads(record.read_text())
        if data["output"] != output:
            return []
        entries = []
        for entry in data["outputs"]:
            name = safe_relpath(entry["name"])  # a record edited to point elsewhere names nothing
            entries.append({"name": name, "size": int(entry["size"]), "mtime_ns": int(entry["mtime_ns"])})
        return entries
    except (OSError, ValueError, TypeError, KeyError, UnsafePath):
        return []


def _write(project: Project, record: Path, out: Path, names: list[str]) -> None:
    entries = []
    for name in names:
        try:
            found = (out / name).lstat()
        except OSError:
            continue
        entries.append({"name": name, "size": found.st_size, "mtime_ns": found.st_mtime_ns})
    refuse_links(project.root, STATE_DIR, "the project's state folder")  # never written through a link
    record.parent.mkdir(exist_ok=True)
    temp = record.with_name(record.name + ".part")
    temp.write_text(json.dumps({"output": project.output, "outputs": entries}))
    temp.replace(record)
