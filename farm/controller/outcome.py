"""A run's job keys by outcome (done, failed, reused), as `CollateContext` shows them to a plugin.

The journal holds them, across controller restarts; memory holds none of them until a plugin
asks (a run may have millions of jobs). A set is read when first used, then kept up to date
as the run goes on (so a `collate` that reads it each time costs no query). `collate` runs
in the controller's collate thread (`farm.controller.collator`): a set it asks for before
the loop read it comes from the committed journal that once, and the loop loads it (`prime`)
when it next hands over results, through the journal (which sees its own uncommitted batch);
from then on the collate reads the loop's copy. `finalize` runs in a thread of its own and reads through a read-only connection of
its own, after the loop committed everything (`ProjectRun.start_finalizing`).
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
        self._keys: set[str] | None = None
        self._settled = False  # no more changes: another thread may keep what it read
        self.wanted = False  # another thread (a collate) asked before the loop read it: `prime`

    def settled(self) -> None:
        """The run's jobs are all in and journaled (committed): read once more, then keep it."""
        self._keys = None
        self._settled = True

    def prime(self) -> None:
        """On the loop: read the set now if another thread asked for it, to keep it up to date."""
        if self.wanted and self._keys is None:
            self._read()

    def add(self, key: str) -> None:
        """A job got this outcome (journaled by the run)."""
        if self._keys is not None:
            self._keys.add(key)

    def discard(self, key: str) -> None:
        """A job has this outcome no more."""
        if self._keys is not None:
            self._keys.discard(key)

    def add_all(self, keys: list[str]) -> None:
        """`add` of each."""
        if self._keys is not None:
            self._keys.update(keys)

    def discard_all(self, keys: list[str]) -> None:
        """`discard` of each."""
        if self._keys is not None:
            self._keys.difference_update(keys)

    def _read(self) -> set[str]:
        keys = self._keys
        if keys is None:
            if threading.get_ident() == self._loop:
                keys = self._keys = self._journal.keys(self._run_id, self._outcome)
            else:  # what is committed; kept only once nothing changes any more (finalize's thread)
                keys = read_keys(self._journal, self._run_id, self._outcome)
                if self._settled:
                    self._keys = keys
                else:
                    self.wanted = True
        return keys

    def __contains__(self, key: object) -> bool:
        return key in self._read()

    def __iter__(self) -> Iterator[str]:
        keys = self._read()
        if threading.get_ident() != self._loop and keys is self._keys and not self._settled:
            keys = set(keys)  # the loop changes its copy: iterate a snapshot (copied under the GIL)
        return iter(keys)

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
        raise JournalError(f"journal {journal.path}: cannot read the {outcome} jobs of {run_id}: "
                           f"{exc}") from None
