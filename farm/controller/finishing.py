"""Runs ending on the controller: finalizes journaled when their thread returns, and a remote
submitter's outputs published for download off the loop.

A mixin of `farm.controller.server.Controller` (the loop thread alone runs it). Publishing an
output folder lists and hashes every file in it: a zoom-10 map's 127,000 tiles took the loop
15-25 s with the disk busy, so heartbeats went unanswered and `farm cancel` timed out. So the
folder is published in a thread of its own (`OutputPublisher`); meanwhile the run is in
``publishing``, and its followers and cancellers hear FINISHED once its outputs are served.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.controller.collator import DISK_CODE, cannot_write, own_fault
from farm.controller.outputfolder import REMOVED_CODE, OutputFolderGone, stopped_by
from farm.errors import FarmError
from farm.filesync import SyncError
from farm.outputgone import removed
from farm.plugincode import describe_bug
from farm.protocol import T

if TYPE_CHECKING:
    from farm.controller.assets import AssetService
    from farm.controller.run import ProjectRun

log = logging.getLogger(__name__)


Then = Callable[[list[str] | None, str | None], None]


def release_run(run: ProjectRun) -> None:
    """The media type's `release` of an ended run (off the loop: closing an SQLite writer folds its
    WAL in); an error is logged, naming the run."""
    try:
        run.media.release(run.ctx)
    except Exception as exc:
        if run.output_folder.gone() is not None:  # its files went with the folder: said already
            log.debug("%s: releasing the run's state: %r", run.id, exc)
            return
        log.exception("%s: the %s media type could not release the run's state", run.id, run.media.name)


def finalize_and_release(run: ProjectRun) -> list[str]:
    """`ProjectRun.finalize`, then `release_run` whatever it did (a finalize that raised left its
    writers open), both in the finalize thread, before the outputs are published."""
    try:
        gone = run.output_folder.gone()
        if gone is not None:  # a finalize would make outputs of what is left, or blame the disk
            raise OutputFolderGone(gone)
        return run.finalize()
    finally:
        release_run(run)


class OutputPublisher:
    """Output folders published (listed, hashed, served) one at a time in a thread of their own;
    `finished` hands each one's callbacks its trees (None: nothing to serve) and the error that
    kept them from being served, back on the loop. A folder asked for again while its publish is
    pending is published once (a follower of a journaled run asks again every few seconds)."""

    def __init__(self, assets: AssetService) -> None:
        self.assets = assets
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="farm-publish")
        self._pending: list[tuple[str, concurrent.futures.Future[tuple[list[str] | None, str | None]],
                                  list[Then]]] = []

    def publish(self, run_id: str, tree: str, folder: Path, then: Then) -> None:
        same = next((thens for name, future, thens in self._pending if name == tree and not future.done()),
                    None)
        if same is not None:
            same.append(then)
        else:
            self._pending.append((tree, self._pool.submit(self._publish, run_id, tree, folder), [then]))

    def _publish(self, run_id: str, tree: str, folder: Path) -> tuple[list[str] | None, str | None]:
        try:
            return self.assets.publish_outputs(tree, folder), None
        except (SyncError, OSError) as exc:  # e.g. a link an output folder must not hold: nothing to fetch
            log.warning("%s: cannot serve its outputs for download: %s", run_id, exc)
            return None, f"the controller cannot serve its outputs for download: {exc}"

    def __len__(self) -> int:
        return len(self._pending)

    def finished(self) -> list[tuple[Then, list[str] | None, str | None]]:
        """The publishes that returned, in the order they were asked for (on the loop)."""
        done = []
        while self._pending and self._pending[0][1].done():
            _, future, thens = self._pending.pop(0)
            done.extend((then, *future.result()) for then in thens)
        return done

    def close(self) -> None:
        """Publish nothing more; wait for the one under way (the file service closes after it)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def served(trees: list[str] | None, error: str | None) -> dict[str, Any]:
    """A summary's fields for its outputs served as ``trees`` (``download_parts`` when several), or
    not served for ``error``: `farm.client.Client.download` fetches every part, or says why not."""
    fields: dict[str, Any] = {"download": trees[0] if trees else None}
    if trees and len(trees) > 1:
        fields["download_parts"] = trees
    if error:
        fields["download_error"] = error
    return fields


class FinishSide:
    """Finalizes and output publishing; needs the controller's runs, journal, assets and senders."""

    _publisher: OutputPublisher | None = None
    _released: dict[str, float | None] | None = None  # run id -> the end (`finished_mono`) released
    _releasing: list[tuple[concurrent.futures.Future[None], Callable[[], None] | None]] | None = None

    def _check_finalizing(self, *, stopping: bool = False) -> None:
        """Start the finalizes due, journal those that ended, answer for the outputs published;
        ``stopping``: start none, wait for the finalizes under way."""
        if stopping:
            concurrent.futures.wait(list(self.finalizing.values()))
            if self._publisher is not None:
                self._publisher.close()
            self._release_all()
        else:
            if self._publisher is not None:
                for then, trees, error in self._publisher.finished():
                    then(trees, error)
            self._check_released()
        for run in () if stopping else self.runs.values():
            if run.active and run.all_in():
                run.start_finalizing()
                self.finalizing[run.id] = self._executor.submit(finalize_and_release, run)
        for run_id, future in list(self.finalizing.items()):
            if future.done():
                del self.finalizing[run_id]
                self._finalized(self.runs[run_id], future)

    def _finalized(self, run: ProjectRun, future: concurrent.futures.Future[list[str]]) -> None:
        try:
            outputs = future.result()
            if (gone := run.output_folder.gone()) is not None:  # removed while it finalized
                raise OutputFolderGone(gone)
            run.finished(outputs, None)
        except Exception as exc:
            if not (self._finalize_folder_gone(run, exc) or self._finalize_own_fault(run, exc)):
                self._finalize_failed(run, exc)
        self._release_marks()[run.id] = run.finished_mono  # released in the finalize thread
        log.info("project %s %s in %.1fs", run.id, run.state, run.elapsed())
        self.assets.unpublish(run.id)
        if run.uploaded:  # the submitter is elsewhere: let it download the outputs
            self._publish_outputs(run)
        else:
            self._journal_finish(run)
        if run.state == "done":  # journaled: no collate or finalize needs its plugin's state
            run.ctx.state.clear()
        if not run.uploaded:
            self._notify_finished(run)
            self._prune()

    @staticmethod
    def _finalize_failed(run: ProjectRun, exc: Exception) -> None:
        if isinstance(exc, FarmError):  # an expected failure the plugin explains: one line, no traceback
            log.error("%s: finalize failed: %s", run.id, exc)
            run.finished([], f"finalize failed: {exc}")
        else:  # a bug in the plugin: keep the traceback for its author
            log.error("%s: finalize failed", run.id, exc_info=exc)
            run.finished([], f"finalize failed: {describe_bug(exc, run.media)}")

    @staticmethod
    def _finalize_folder_gone(run: ProjectRun, exc: Exception) -> bool:
        """A finalize that found (or failed because) the output folder was removed during the run:
        the run fails naming it, with `code` "output_removed"; the disk and the plugin are not to blame.
        So does one that found a file it holds open removed or replaced (`farm.outputgone.OutputRemoved`)."""
        gone = str(exc) if isinstance(exc, OutputFolderGone) else run.output_folder.gone()
        if gone is None and (file := removed(exc)) is not None:  # the MBTiles file removed or replaced:
            gone = str(file)  # its SQLite error ("readonly") is no full disk
        if gone is None:
            return False
        why = None
        if run.error is None:  # else the run stopped for it (a collate found it first) or another reason
            why = stopped_by(gone, "finalizing")
            log.error("%s: %s", run.id, why)
            run.served = {**run.served, "code": REMOVED_CODE}
        run.finished([], why)
        return True

    @staticmethod
    def _finalize_own_fault(run: ProjectRun, exc: Exception) -> bool:
        """A finalize the controller's own disk failed (full, read-only): the run fails naming the
        output folder and the OS error, with `code` "controller_disk"; no plugin bug to trace."""
        own = own_fault(exc)
        if own is None:
            return False
        why = cannot_write(run.project.output_dir, own, "finalizing")
        log.error("%s: %s", run.id, why)
        run.served = {**run.served, "code": DISK_CODE}
        run.finished([], why)
        return True

    def _release_marks(self) -> dict[str, float | None]:
        if self._released is None:
            self._released = {}
        return self._released

    def _release(self, run: ProjectRun, then: Callable[[], None] | None = None) -> None:
        """Release an ended run's media-type state (`release_run`) in the finalize thread once no
        collate of it is running; then ``then`` on the loop (publishing its outputs)."""
        self._release_marks()[run.id] = run.finished_mono
        if self._releasing is None:
            self._releasing = []
        pending = self._releasing
        self.collator.after_collate(run, lambda: pending.append((self._executor.submit(release_run, run),
                                                                 then)))

    def _check_released(self) -> None:
        """On the loop: continue the releases that returned; release the runs that ended otherwise
        (the controller's disk stopped them) once each end."""
        for future, then in [p for p in self._releasing or () if p[0].done()]:
            self._releasing.remove((future, then))  # type: ignore[union-attr]
            if then is not None:
                then()
        marks = self._release_marks()
        for run in self.runs.values():
            if (run.state in ("done", "failed", "cancelled") and run.id not in self.finalizing
                    and marks.get(run.id, -1.0) != run.finished_mono):
                self._release(run)
        for gone in marks.keys() - self.runs.keys():
            del marks[gone]

    def _release_all(self) -> None:
        """The controller stops: release every run's state not released yet (a run under way too,
        so no SQLite writer is left open with its WAL), after the collate thread stopped."""
        try:
            self.collator.close()  # the collate running, if any, returns first; none starts after
            concurrent.futures.wait([future for future, _ in self._releasing or ()])
            marks = self._release_marks()
            for run in self.runs.values():
                ended = run.state in ("done", "failed", "cancelled")
                if run.id in self.finalizing:  # released in the finalize thread
                    continue
                if not ended or marks.get(run.id, -1.0) != run.finished_mono:
                    release_run(run)
        except Exception:
            log.exception("could not release the runs' state as the controller stopped")

    def _publish_outputs(self, run: ProjectRun) -> None:
        """Serve an ended remote run's output folder for download, off the loop; its followers and
        cancellers (``publishing``) hear FINISHED once it is served (`_published`)."""
        tree = f"{run.id}.output"
        self.publishing.setdefault(run.id, [])
        # journaled now with the tree it will be served as: a controller that stops meanwhile
        # serves it again from the output folder after its restart (`ClientSide._answer_journaled`)
        self._journal_finish(run, {**run.summary(), "download": tree})
        self._output_publisher().publish(run.id, tree, run.project.output_dir,
                                         lambda trees, error: self._published(run, trees, error))

    def _output_publisher(self) -> OutputPublisher:
        if self._publisher is None:
            self._publisher = OutputPublisher(self.assets)
        return self._publisher

    def _published(self, run: ProjectRun, trees: list[str] | None, error: str | None) -> None:
        run.served = {**served(trees, error), **{k: v for k, v in run.served.items() if k == "code"}}
        run.download = run.served["download"]
        summary = run.summary()
        if trees is None:  # nothing to serve after all
            self._journal_finish(run, summary)
        for identity, already in self.publishing.pop(run.id, ()):
            self._send(identity, T.FINISHED, {"summary": summary, **({"already": True} if already else {})})
        self._notify_finished(run)
        self._prune()
