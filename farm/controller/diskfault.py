"""The controller's own disk failing it: its state folder (the journal, the staging of results) full,
read-only or failing.

No job is to blame for that, and no render would fix it. A result that cannot be staged stops its
run once, as a collate that cannot write the output folder does (`farm.controller.collator`): the
render stands, no attempt is counted, the run's jobs in flight are withdrawn and it fails with the
folder and the OS error. A journal write that fails for the disk (SQLite FULL, IOERR, READONLY;
ENOSPC, EROFS, ...) used to end the controller with a traceback while its submitters waited in
silence for a restart. Now what was not committed is dropped (those jobs are not done after a
restart: they render again), every run under way stops with the reason, its followers hear it as
the run's end (FINISHED, with ``code`` "controller_disk"), and the controller goes on serving:
status, new submissions once there is room.

A mixin of `farm.controller.server.Controller` (the loop thread alone runs it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from farm.controller.clients import ENDED
from farm.controller.collator import DISK_CODE, own_fault, state_unwritable
from farm.journal import JournalError

if TYPE_CHECKING:
    from farm.controller.run import Lease, ProjectRun

log = logging.getLogger(__name__)


class DiskSide:
    """Runs stopped by the controller's own disk; needs the controller's runs, journal and senders."""

    disk_fault: str | None = None  # the last such reason, for clients refused meanwhile
    ends_with_submitter = False  # `ClientSide.ends_with_submitter`

    def _staging_failed(self, lease: Lease, exc: BaseException) -> bool:
        """A result's outputs could not be staged in the state folder: True if for the disk (the run
        stopped, no attempt counted), False if the job's result may be to blame."""
        own = own_fault(exc)
        if own is None:
            return False
        run = lease.run
        run.leases.pop(lease.job.key, None)  # this result's lease: ended, nothing to cancel
        why = state_unwritable(self.state_dir, own, f"receiving the outputs of job {lease.job.key}")
        self._stop_run(run, why)
        return True

    def _stop_run(self, run: ProjectRun, why: str) -> None:
        if run.stopped is None:  # once: later results of the run are withdrawn quietly
            run.stopped = why
            run.abort(why if run.error is None else f"{run.error}; then {why}")
            run.served = {**run.served, "code": DISK_CODE}  # in its summary (`ProjectRun.summary`)
        self._collates_stopped(run)

    def _journal_fault(self, exc: JournalError) -> bool:
        """A journal write failed: if for the disk, stop every run under way with why and tell their
        followers; True then (the loop goes on), False for any other journal error."""
        own = own_fault(exc)
        if own is None:
            return False
        dropped = self.journal.discard()
        why = state_unwritable(self.state_dir, own, "recording the runs in its journal")
        self.disk_fault = why
        # the embedded farm's submitter hears it as its run's error: said there, once
        log.log(logging.INFO if self.ends_with_submitter else logging.ERROR,
                "%s (%d job outcomes not recorded: those jobs render again)", why, dropped)
        for run in list(self.runs.values()):
            # a finalize under way is journaled when it returns (`FinishSide._journal_finish`)
            if run.state in ENDED or run.id in self.finalizing:
                continue
            self._stop_run(run, why)
            run.collating.clear()  # what comes back is dropped; what has not started is skipped
            run.finished([], why)
            self._journal_finish(run)
            self._notify_finished(run)
        self._prune()
        return True

    def _journal_finish(self, run: ProjectRun, summary: dict | None = None) -> None:
        """Journal a run's end; a disk that refuses it stops the runs under way instead of the loop
        (the run then stays unfinished in the journal: a restart resumes it)."""
        try:
            self.journal.finish_project(run.id, run.state, run.summary() if summary is None else summary)
        except JournalError as exc:
            if own_fault(exc) is None:
                raise
            if self.disk_fault is None or run.stopped is None:
                self._journal_fault(exc)
            else:  # said already: drop what failed, quietly
                self.journal.discard()

    def _close_journal(self) -> None:
        """Close the journal as the loop ends; a disk that refuses its last commit is said, once."""
        try:
            self.journal.close()
        except JournalError as exc:
            if own_fault(exc) is None:
                raise
            log.error("%s; the last job outcomes were not recorded: those jobs render again after a restart",
                      exc)
