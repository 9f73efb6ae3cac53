"""The one owner of an audio run's scratch files on the controller: the joins and the analysis record.

A run that finishes removes them at once. One whose finalize fails removes them at once too,
unless jobs of it failed for good: `farm retry` may run those again in the same controller,
and their collates and the next finalize need the ranges already joined; then they go when
the controller drops the run's state (it keeps the last finished runs) or exits, unless a
later run of the same settings took them over meanwhile. A controller that dies mid-run keeps
them: the next one resumes from them.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: a file -> the pending removal of the failed run that left it (a later run takes it over)
_pending: dict[Path, weakref.finalize] = {}


def _remove(paths: tuple[Path, ...]) -> None:
    for path in paths:
        _pending.pop(path, None)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # the run's own error matters more than a leftover file
            log.warning("could not remove the audio scratch file %s: %s", path, exc)


class Scratch:
    """Files to remove when the run ends: now (`remove`), or once this object is dropped
    (`remove_when_dropped`)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = tuple(paths)
        for path in self.paths:  # this run resumes from them: an earlier run's removal must not
            earlier = _pending.pop(path, None)
            if earlier is not None:
                earlier.detach()

        self._armed: weakref.finalize | None = None

    def remove(self) -> None:
        if self._armed is not None:
            self._armed.detach()
        _remove(self.paths)

    def remove_when_dropped(self) -> None:
        """Remove the files when the run's state is dropped or the process exits, whichever comes first."""
        if self._armed is None:
            self._armed = weakref.finalize(self, _remove, self.paths)
        for path in self.paths:
            _pending[path] = self._armed
