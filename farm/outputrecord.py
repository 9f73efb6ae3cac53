"""The final outputs a run left in a project's output folder, so the next run replaces them.

A remote run's outputs are downloaded into the local output folder, beside whatever earlier
runs left there. A final output an earlier run made and the newest run did not make again (the
video after a run whose frames failed, a contact sheet after it was turned off) would look like
the newest run's (so would a tile in a map's ``tiles/`` at a zoom the newest run does not render).
So each remote run's final outputs (a folder output by the files in it) are recorded in the
project's state folder, and the next remote run removes those of them it did not list (and the
folders that leaves empty), if they are still the files that were downloaded (same size and
modification time: a file the user changed stays). On the embedded farm the media type's
finalize writes in the project's own folder and sees what an earlier run left: `farm_frames`
and `farm_audio` keep a record of their own in the same way (`replace_recorded`), so a
successful run removes the recorded outputs it did not write again (another codec's video, a
dropped format: `replace_outputs`) and a failed run removes them all (`remove_recorded`),
never a file the record does not name or that changed since; `farm_maptiles` removes tiles
outside the run's zooms and bounds. A cancelled remote run's download removes no per-job
output: its summary names the files in the folder it did not bring (`cancelled_note`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from farm.errors import FarmError
from farm.linkcheck import refuse_links
from farm.paths import UnsafePath, safe_relpath
from farm.project import STATE_DIR, Project
from farm.words import counted

if TYPE_CHECKING:
    from farm.mediatype import CollateContext

log = logging.getLogger(__name__)

RECORD = "remote-outputs.json"  # in the project's state folder
_SHOWN = 5  # removed files a warning names before it counts the rest


def replace_earlier(project: Project, outputs: list[str], downloaded: Iterable[str] = ()) -> list[str]:
    """Remove the final outputs the previous remote run of ``project`` recorded and ``outputs``
    (this run's, paths in the local output folder) does not name, then record this run's.
    ``downloaded``: the files this run's download brought, relative to the output folder (those
    under a folder output are its files; a file there that it did not bring is an earlier run's).

    Returns the removed files, relative to the output folder. Never raises for the record
    itself (unreadable, unwritable): the run's outputs are what matters, so that is logged.
    """
    out = project.output_dir
    removed = replace_recorded(project, RECORD, _files(out, outputs, set(downloaded)))
    if removed:
        log.warning("%s: removed %s from %s: an earlier run made %s, and this run did not make %s again",
                    project.name, name_some(removed), out, "them" if len(removed) > 1 else "it",
                    "them" if len(removed) > 1 else "it")
    return removed


def replace_recorded(project: Project, record_name: str, made: set[str]) -> list[str]:
    """Remove the files the record ``record_name`` (in the project's state folder) names and
    ``made`` (this run's files, relative to the output folder) does not, if each is still the
    file recorded (same size and modification time: one the user changed since stays), with
    the folders that leaves empty; then record ``made``. The record applies only to the output
    folder it was written for. Returns the removed files, relative to the output folder; the
    caller says so. Never raises for the record itself: that is logged.
    """
    out = project.output_dir
    record = project.root / STATE_DIR / record_name
    removed = []
    entries = _read(record, project.output)
    if not entries and not made:  # nothing recorded, nothing to record: the state folder is left alone
        return removed
    for entry in entries:
        name = entry["name"]
        if name in made:
            continue
        path = out / name
        try:
            found = path.lstat()
            if found.st_size == entry["size"] and found.st_mtime_ns == entry["mtime_ns"] and path.is_file():
                path.unlink()
                removed.append(name)
                _prune(path.parent, out)
        except OSError:  # gone already, or not ours to remove: left as it is
            continue
    try:
        _write(project, record, out, sorted(made))
    except (OSError, FarmError) as exc:  # FarmError: a link in the state folder
        log.warning("%s: cannot record this run's outputs in %s: %s", project.name, record, exc)
    return removed


def replace_outputs(ctx: CollateContext, record_name: str, outputs: Iterable[Path]) -> list[str]:
    """A media type's successful finalize: remove the outputs its previous run recorded (in
    ``record_name``) and ``outputs`` (this run's, in ``ctx.output_dir``) does not name, by the
    rule of `replace_recorded`, then record these. One warning (a note of the run) names what
    went; returns it."""
    made = {os.path.relpath(path, ctx.output_dir) for path in outputs}
    removed = replace_recorded(ctx.project, record_name, made)
    if removed:
        # no folder named: a remote submitter's notes would name the controller's
        ctx.log.warning("%s: removed %s: an earlier run of this project wrote %s, and this run does not "
                        "(its outputs: %s)", ctx.project.name, name_some(removed),
                        "them" if len(removed) > 1 else "it", ", ".join(sorted(made)))
    return removed


def remove_recorded(
    project: Project, record_name: str, lookalikes: Iterable[Path], made: Iterable[Path] = ()
) -> tuple[list[str], list[str]]:
    """A media type's run that made no final outputs (failed jobs, a failed encode): remove
    the outputs its previous run recorded (in ``record_name``) by the rule of
    `replace_recorded`, but ``made`` (files this run did write, kept and recorded). Returns
    (removed, kept): ``kept`` are those of ``lookalikes`` (the names the type gives its
    outputs) still there, not this run's: the record does not name them (the user's own, or
    from before farm kept the record) or they changed since; the caller's warning names both
    (`removal_note`). Names are relative to the output folder."""
    out = project.output_dir
    own = {os.path.relpath(path, out) for path in made}
    removed = replace_recorded(project, record_name, own)
    kept = []
    for path in lookalikes:
        name = os.path.relpath(path, out)
        if name not in own and name not in removed and path.is_file() and name not in kept:
            kept.append(name)
    return removed, sorted(kept)


def removal_note(removed: list[str], kept: list[str], lead: str = ",") -> str:
    """``, removed the earlier run's a, b; kept c: ...`` (``lead`` first) for a failed run's
    warning or error; '' if neither."""
    note = f"{lead} removed the earlier run's {name_some(removed)}" if removed else ""
    if kept:
        note += (f"{';' if removed else lead} kept {name_some(kept)}: no earlier run recorded writing "
                 f"{'them' if len(kept) > 1 else 'it'}, or {'they' if len(kept) > 1 else 'it'} "
                 "changed since")
    return note


def cancelled_note(folder: Path, downloaded: Iterable[str]) -> list[str]:
    """A cancelled remote run's download brings the per-job outputs it made, beside what is in
    ``folder`` already: the files there it did not bring (``downloaded``: relative to ``folder``)
    are an earlier run's or the user's, and would pass for this run's. The note that names them
    (hidden ones left out, as the download leaves them out), or none when there are none. Nothing is
    removed: a cancel keeps what is there, and says which is which."""
    brought = set(downloaded)
    older = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), folder)
            if not name.startswith(".") and rel not in brought:
                older.append(rel)
    if not older:
        return []
    return [f"the run was cancelled: its download brought {counted(len(brought), 'file')}; "
            f"{name_some(older)} in {folder} {'are' if len(older) > 1 else 'is'} not this run's (an "
            f"earlier run's, or yours), {len(older)} in all"]


def name_some(names: list[str]) -> str:
    """``a, b, c, d, e and 2 more``: the first few of ``names``, for a warning."""
    more = len(names) - _SHOWN
    return ", ".join(names[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _files(out: Path, outputs: list[str], downloaded: set[str]) -> set[str]:
    """The files of ``outputs`` in ``out``, relative to it: a folder output (a map's ``tiles/``) by
    the files ``downloaded`` under it, so an earlier run's file there that this run did not bring goes."""
    made = set()
    for output in outputs:
        path = Path(output)
        if not path.is_relative_to(out):
            continue
        rel = os.path.relpath(path, out)
        if path.is_dir() and not path.is_symlink():
            made.update(name for name in downloaded if name.startswith(rel + "/"))
        else:
            made.add(rel)
    return made


def _prune(folder: Path, out: Path) -> None:
    """Remove ``folder`` and the folders above it up to ``out`` while they are empty."""
    while folder != out and folder.is_relative_to(out):
        try:
            folder.rmdir()
        except OSError:  # not empty (or not ours): the folders above are not empty either
            return
        folder = folder.parent


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
