"""A run's job keys by outcome (done, failed, reused), as `CollateContext` shows them to a plugin.

The journal holds them, across controller restarts; memory holds none of them until a plugin
asks (a run may have millions of jobs). A set is read when first used and read again after
the run changed it. `collate` runs in the controller's loop and reads through the journal
(which sees its own uncommitted batch); `finalize` runs in a thread of its own and reads
through a read-only connection of its own, after the loop committed everything
(`ProjectRun.start_finalizing`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from collections.abc import Set as AbstractSet

from farm.journal import OUTCOMES, Journal, JournalError


class JobKeys(AbstractSet[str]):
    """The keys of one run's jobs with one outcome; a read-only set of str."""

    def __init__(self, journal: Journal, run_id: str, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {outcome!r}")
        self._journal = journal
        self._run_id = run_id
        self._outcome = outcome
        self._loop = threading.get_ident()  # the thread the journal belongs to
        self._keys: frozenset[str] | None = None

    def changed(self) -> None:
        """The run's journal rows changed: read again at the next use."""
        self._keys = None

    def _read(self) -> frozenset[str]:
        keys = self._keys
        if keys is None:
            if threading.get_ident() == self._loop:
                keys = frozenset(self._journal.keys(self._run_id, self._outcome))
            else:
                keys = frozenset(read_keys(self._journal, self._run_id, self._outcome))
            self._keys = keys
        return keys

    def __contains__(self, key: object) -> bool:
        return key in self._read()

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return f"<{self._outcome} job keys of {self._run_id}>"


def read_keys(journal: Journal, run_id: str, outcome: str) -> set[str]:
    """The keys as last committed, through a read-only connection of this thread's own."""
    uri = journal.path.absolute().as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            return {key for (key,) in db.execute(OUTCOMES[outcome], (run_id,))}
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise JournalError(f"journal {journal.path}: cannot read the {outcome} jobs of {run_id}: {exc}") from None
