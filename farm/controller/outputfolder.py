"""A run's output folder, known by its identity (device and inode) from its first collate on.

A folder removed while the run writes there (`rm -rf output` during `farm submit`), moved away,
or removed and made again, took the outputs of the jobs collated before with it. Media types
that make their folders as they go (`mkdir(parents=True)`) wrote the later jobs into a new folder
and the run ended done with most outputs missing; others blamed each job after it with a
`FileNotFoundError`. Now the first collate or the finalize that finds another folder (or none)
stops the run, once, naming the folder; no job is blamed (rendering one again would not bring
the others back). The identity is journaled (controls scope "output"), so a controller started
again (an embedded `farm submit` after Ctrl-C) does not resume a run whose folder went meanwhile:
it ends as failed, saying so, and the project submitted again renders whole.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from farm.errors import FarmError

if TYPE_CHECKING:
    from farm.controller.run import ProjectRun
    from farm.journal import Journal

log = logging.getLogger(__name__)

SCOPE = "output"  # journal controls: run id -> [st_dev, st_ino] of its output folder
REMOVED_CODE = "output_removed"  # a summary's `code` when the output folder went during the run


class OutputFolderGone(FarmError):
    """The run's output folder is not the one its collates wrote to (raised before a finalize)."""


def identity(folder: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of `folder`, None when there is no folder there."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class OutputFolder:
    """One run's output folder: `made` records it (collate thread), `gone` says if it changed since."""

    __slots__ = ("path", "ident", "kept")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ident: tuple[int, int] | None = None
        self.kept = False  # the identity is in the journal

    def made(self) -> None:
        """After the first collate made (or found) the folder: the one the run writes to."""
        if self.ident is None:
            self.ident = identity(self.path)

    def gone(self, when: str = "during the run") -> str | None:
        """Why the outputs collated so far are not all there (the folder was removed, moved, or made
        again), or None: the same folder, or none made yet."""
        if self.ident is None:
            return None
        now = identity(self.path)
        if now == self.ident:
            return None
        again = "" if now is None else " (a new folder of that name is there now)"
        return (f"the output folder {self.path} was removed or moved away {when}{again}, taking the "
                "outputs of the jobs collated before with it")

    def keep(self, journal: Journal, run_id: str) -> None:
        """Journal the identity once (on the loop), so a restart can tell the folder went meanwhile."""
        if self.ident is not None and not self.kept:
            journal.set_control(SCOPE, run_id, list(self.ident))
            self.kept = True


def stopped_by(gone: str, doing: str) -> str:
    """Why a run stopped when `gone` (`OutputFolder.gone`) was found `doing` something, for people."""
    return f"{gone} (found {doing}); no job is to blame: submit the project again"


def not_resumable(run: ProjectRun, journal: Journal) -> str | None:
    """For a run taken up from the journal: why it cannot resume (its jobs done before wrote into a
    folder that is gone), or None. Its identity is then the journaled one, for the checks to come."""
    kept = journal.controls(SCOPE).get(run.id)  # none: no job was collated (it is kept before the first)
    if kept is None:
        return None
    run.output_folder.ident, run.output_folder.kept = (int(kept[0]), int(kept[1])), True
    why = run.output_folder.gone("while the controller was stopped")
    return None if why is None else f"{why}; not resumed: the project submitted again renders whole"
