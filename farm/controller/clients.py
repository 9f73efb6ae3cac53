"""The controller's side of its clients: submit (and upload), follow, status, cancel.

A mixin of `farm.controller.server.Controller` (the loop thread alone runs it). Reading a
submitted project happens off the loop (`farm.controller.intake`); `_accept` starts the run.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from farm.controller import history
from farm.controller.collator import DISK_CODE, described
from farm.controller.finishing import served
from farm.controller.intake import Intake, Prepared, path_replaced
from farm.controller.jobcache import assets_digest
from farm.controller.run import ProjectRun
from farm.filesync import Manifest, SyncError, UploadResult
from farm.journalschema import JournalError
from farm.notify import finished_details, webhook_host
from farm.plugins import get_plugins
from farm.protocol import Message, T, pack

if TYPE_CHECKING:
    from farm.journal import ProjectRecord
    from farm.mediatype import MediaType
    from farm.project import Project

log = logging.getLogger(__name__)

CLIENT_MESSAGES = {T.SUBMIT, T.STATUS, T.CANCEL_PROJECT, T.FOLLOW, T.EVENTS, T.CONTROL, T.QUERY}
STATUS_SNAPSHOT_S = 0.25  # STATUS is answered from a snapshot at most this old: a flood costs a send each
MAX_PENDING_UPLOADS = 64  # expected uploads, all clients together; the oldest is given up past it
MAX_FOLLOWERS = 256  # clients following one run
KEEP_FINISHED_RUNS = history.KEEP_FINISHED_RUNS
ENDED = ("done", "failed", "cancelled")  # a run's states once it has finished
FINALIZING_REFUSAL = ("project {} is finalizing (its jobs are done; its final outputs are being written): "
                      "it cannot be cancelled now; it will end as done or failed")


class ClientSide:
    """Handlers for clients' messages; needs the controller's scheduler, events, _send and state."""

    #: the embedded farm's: this controller ends with the command that submitted to it, so its runs
    #: point people at that command's summary for a job's log, not at `farm logs` (`RunReport.logs_at`)
    ends_with_submitter = False

    def _new_run(self, run_id: str, project: Project, media: MediaType, priority: int) -> ProjectRun:
        """A run of this controller (a new one, or one resumed from the journal)."""
        run = ProjectRun(run_id, project, media, self.journal, priority=priority, events=self.events,
                         logs=self.joblog_store)
        run.ends_with_submitter = self.ends_with_submitter
        return run

    def _handle_client(self, identity: bytes, msg: Message, key: str | None = None) -> None:
        if key is not None and self.security is not None:
            self.client_keys[identity] = key  # what we push it stops if its key is revoked
        if msg.type is T.SUBMIT:
            self._submit(identity, msg.body)
        elif msg.type is T.FOLLOW:
            self._follow(identity, msg.body["project"])
        elif msg.type is T.STATUS:
            self._send_status(identity)
        elif msg.type is T.CANCEL_PROJECT:
            self._cancel(identity, msg.body["project"])
        elif msg.type is T.CONTROL or msg.type is T.QUERY:
            self._handle_steering(identity, msg)  # farm.controller.control
        elif msg.type is T.EVENTS:
            epoch = msg.body.get("epoch")
            error = self.subscribers.subscribe(identity, msg.body.get("since"),
                                               epoch if isinstance(epoch, str) else None)
            if error:
                self._send(identity, T.ERROR, {"message": error})

    def _follow(self, identity: bytes, run_id: str) -> None:
        """Follow a run: its updates, then FINISHED; at once for a run that has ended (say while its
        submitter waited out a restart), also one that finished before this controller started."""
        run = self.runs.get(run_id)
        if run is None:
            record = self._ended_record(run_id)
            if record is None or record.project_id != run_id:
                self._send(identity, T.ERROR, {"message": f"no project {run_id[:200]!r} on this controller "
                                                          "(farm status lists its projects)",
                                               "code": "not_found"})
            else:  # its outputs served again, for `farm download` or a submitter that waited out a restart
                self._answer_journaled(identity, record, {})
            return
        if run.id in self.publishing:  # cancelled: FINISHED once its outputs are served
            self.followers.setdefault(run.id, set()).add(identity)
            return
        if run.state in ENDED:
            self._send(identity, T.FINISHED, {"summary": run.summary()})
            return  # (a finalizing run has not: its followers hear FINISHED when finalize returns)
        followers = self.followers.setdefault(run.id, set())
        if identity not in followers and len(followers) >= MAX_FOLLOWERS:
            self._send(identity, T.ERROR,
                       {"message": f"project {run.id} has {MAX_FOLLOWERS} followers already"})
            return
        followers.add(identity)
        self._send_update(run)

    def _drop_revoked_clients(self) -> int:
        """Cut off the clients whose key is no longer allowed (`farm keys revoke`): a revoke refuses
        new handshakes and `_read` their requests, but a connected follower or event subscriber
        would go on hearing of runs. Each is told why, once; returns how many."""
        keys = self.client_keys
        if not keys:
            return 0
        awaiting = {identity for waiting in self.publishing.values() for identity, _ in waiting}
        awaiting.update(identity for identity, _, _ in self.uploads.values())  # submitters, not yet following
        listening = awaiting.union(self.intake.reading_for(), self.subscribers.cursors,
                                   *self.followers.values())
        for identity in [i for i in keys if i not in listening]:  # one-off requests: nothing to cut off
            del keys[identity]
        revoked = [identity for identity, key in keys.items() if not self.security.allows(key)]
        for identity in revoked:
            del keys[identity]
            for followers in self.followers.values():
                followers.discard(identity)
            for run_id, waiting in self.publishing.items():
                self.publishing[run_id] = [w for w in waiting if w[0] != identity]
            self.subscribers.cursors.pop(identity, None)
            for token in [t for t, (i, _, _) in self.uploads.items() if i == identity]:
                self._give_up_upload(token, "its submitter's key was revoked")
            self._send(identity, T.ERROR, {"code": "revoked", "message": (
                "the key this client proved was revoked here (`farm keys revoke`): it hears no more of its "
                "runs; ask the controller's owner for a new join token (`farm keys invite --client`)")})
        if revoked:
            log.info("cut off %d client(s) whose key was revoked", len(revoked))
        return len(revoked)

    def _send_status(self, identity: bytes) -> None:
        """Answer STATUS from a snapshot at most `STATUS_SNAPSHOT_S` old: a flood costs one send each."""
        now = time.monotonic()
        if self.security is not None:  # a revoke shows at once, not at the next re-read of allowed/
            self.security.refresh()
            if self._drop_revoked():
                self._status = None
        if self._status is None or now - self._status[0] > STATUS_SNAPSHOT_S:
            self._status = (now, pack(T.STATUS_REPLY, self.status()))
        try:
            self.sock.send_multipart([identity, *self._status[1]], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("cannot answer STATUS to %r: %s", identity[:32], exc)

    def _submit(self, identity: bytes, body: dict[str, Any]) -> None:
        wire = body["project"]
        if not isinstance(wire, dict) or not isinstance(wire.get("root"), str):
            self._send(identity, T.ERROR, {"message": "SUBMIT needs a project with a root folder"})
            return
        busy = self.intake.busy(identity)
        if busy:
            self._send(identity, T.ERROR, {"message": busy})
            return
        priority = max(-1_000_000, min(body["priority"], 1_000_000))
        if body.get("upload"):  # a remote submitter: its project comes through the file synchroniser
            if len(self.uploads) >= MAX_PENDING_UPLOADS:
                self._give_up_upload(next(iter(self.uploads)), "too many uploads are pending; submit again")
            token = uuid.uuid4().hex
            folder = self.state_dir / "uploads" / token
            self.assets.expect_project(token, folder, max_bytes=self.intake_limits.max_total_bytes,
                                       max_files=self.intake_limits.max_files)
            self.uploads[token] = (identity, {**body, "priority": priority}, folder)
            self._send(identity, T.UPLOAD, {"token": token, "files": self.assets.endpoint})
            return
        self._start_run(identity, wire["root"], wire.get("output"), priority, uploaded=False,
                        facts=wire.get("facts"))

    def _give_up_upload(self, token: str, why: str) -> None:
        identity, _, folder = self.uploads.pop(token)
        self.assets.server.cancel_upload(token)
        shutil.rmtree(folder, ignore_errors=True)
        self._send(identity, T.ERROR, {"message": f"project upload given up: {why}"})

    def _prepare(self, run: ProjectRun, manifest: Manifest | None = None) -> None:
        """Publish a run's assets for agents (hashed already, or now), and let it reuse finished identical jobs."""
        run.assets, run.manifest = self.assets.publish_project(run.id, run.project, manifest)
        run.assets_digest = assets_digest(run.manifest)
        run.cache = self.cache
        run.plugin_version = get_plugins().owner(run.media.name).version

    def _uploaded(self, upload: UploadResult) -> None:
        found = self.uploads.pop(upload.token, None)
        if found is None:
            return
        identity, body, folder = found
        if not upload.ok:
            shutil.rmtree(folder, ignore_errors=True)  # what came of it is never used
            if upload.disk is not None:  # the controller's own disk: said once, by the file server
                self._send(identity, T.ERROR, {"message": upload_refused(self.state_dir, upload.disk),
                                               "code": DISK_CODE})
                return
            error = path_replaced(str(upload.error), folder, "the controller's copy")  # not our state path
            self._send(identity, T.ERROR, {"message": f"project upload failed: {error}"})
            return
        self._start_run(identity, str(folder), body["project"].get("output"), body["priority"], uploaded=True,
                        facts=body["project"].get("facts"), shown_as=body["project"]["root"])

    def _start_run(self, identity: bytes, root: Any, output: Any, priority: int, *, uploaded: bool,
                   facts: Any = None, shown_as: Any = None) -> None:
        """Read the project off the loop (`farm.controller.intake`); `_accept` starts it once read.
        ``shown_as``: an upload's folder as its submitter knows it, for errors (`intake.as_submitted`)."""
        self.intake.read(identity, root, output, uploaded=uploaded, facts=facts, shown_as=shown_as,
                         then=lambda prepared: self._accept(identity, prepared, priority, uploaded=uploaded))

    def _intake_done(self, intake: Intake) -> None:
        if intake.error is not None:
            self._send(intake.identity, T.ERROR, {"message": intake.error})
        elif intake.result is not None:
            intake.then(intake.result)

    def _accept(self, identity: bytes, prepared: Prepared, priority: int, *, uploaded: bool) -> None:
        project, media = prepared.project, prepared.media
        same = next((r for r in self.runs.values()
                     if r.identity == project.identity() and r.state in ("running", "finalizing")), None)
        if same is not None:  # a re-submit of a project in progress (or resumed after a crash): follow it
            log.info("project %s is already running; following it", same.id)
            self.followers.setdefault(same.id, set()).add(identity)
            self._send(identity, T.ACCEPTED, {"project": same.id, "total": same.total})
            return
        run_id = f"{project.name[:64]}-{uuid.uuid4().hex[:8]}"
        run = self._new_run(run_id, project, media, priority)
        try:
            self._prepare(run, prepared.manifest)
        except (SyncError, OSError) as exc:
            self._send(identity, T.ERROR, {"message": f"{project.root}: {exc}"})
            return
        self.journal.add_project(run_id, {**project.to_wire(), "uploaded": uploaded}, priority, time.time())
        run.uploaded = uploaded
        self.scheduler.add(run)
        self.followers.setdefault(run_id, set()).add(identity)
        self._announce(run, resumed=False)
        log.info("accepted project %s (%s, %s jobs, %d asset files)", run_id, media.name, run.total,
                 run.assets["files"])
        self._status = None  # the next STATUS lists the new run
        self._send(identity, T.ACCEPTED, {"project": run_id, "total": run.total})

    def _cancel(self, identity: bytes, ref: str) -> None:
        """Cancel a project by run id or name: running (the newest of that name), else still uploading.

        The answer is a FINISHED summary; for a run that had finished already, with ``already``
        set and nothing cancelled. A finalizing run is refused (code ``finalizing``): its jobs are
        done and the media type's finalize, in a thread, cannot be stopped halfway without leaving
        partial outputs; it ends as done or failed, and its followers hear FINISHED then. A remote
        submitter's run serves what was collated for download, as a finished run does, once a
        collate still running in the collate thread has returned, off the loop (`_publish_outputs`;
        the answers wait for it, the loop does not).
        """
        named = [r for r in self.runs.values() if r.project.name == ref]
        run = self.runs.get(ref) or next((r for r in reversed(named) if r.active), None)
        if run is None:
            token = next((t for t, (_, body, _) in self.uploads.items()
                          if body["project"].get("name") == ref), None)
            if token is not None:
                self._cancel_upload(identity, token)
                return
            run = next((r for r in reversed(named) if r.state == "finalizing"), named[-1] if named else None)
        if run is None:
            self._answer_finished_before(identity, ref)
            return
        if run.state == "finalizing":
            self._send(identity, T.ERROR, {"message": FINALIZING_REFUSAL.format(run.id),
                                           "code": "finalizing"})
            return
        if not run.active:
            if run.id in self.publishing:  # cancelled a moment ago: answered with the others
                self.publishing[run.id].append((identity, True))
            else:
                self._send(identity, T.FINISHED, {"summary": run.summary(), "already": True})
            return
        for lease in self.scheduler.cancel(run):
            self._send(lease.agent, T.CANCEL, {"leases": [lease.id]})
        log.info("cancelled project %s", run.id)
        self.assets.unpublish(run.id)
        self.journal.finish_project(run.id, "cancelled", run.summary())  # a restart does not resume it
        if not run.uploaded:
            self._release(run)  # farm.controller.finishing: its open writers closed, off the loop
            self._send(identity, T.FINISHED, {"summary": run.summary()})
            self._notify_finished(run)
            return
        # The submitter is elsewhere: let it download what was collated, once a collate still
        # running (in the collate thread) has finished writing into the output folder and the
        # media type has closed what it holds open (an MBTiles file's WAL folded in).
        self.publishing[run.id] = [(identity, False)]
        self._release(run, lambda: self._publish_outputs(run))  # farm.controller.finishing

    def _answer_finished_before(self, identity: bytes, ref: str) -> None:
        """Cancel of a run that finished before this start: its journaled summary, outputs served again."""
        record = self._ended_record(ref)
        if record is None:
            self._send(identity, T.ERROR, {"message": f"no project {ref!r} on this controller "
                                                      "(farm status lists its projects)", "code": "not_found"})
            return
        self._answer_journaled(identity, record, {"already": True})

    def _ended_record(self, ref: str) -> ProjectRecord | None:
        """A finished run no longer in memory, from the journal: one that finished before this start
        (by id or name), or one pruned from memory since (`_prune`; by id)."""
        record = self.finished_before().find(ref)
        if record is not None or ref in self.runs:
            return record
        try:
            found = self.journal.project_record(ref)
        except JournalError as exc:
            log.warning("cannot look up project %r in the journal: %s", ref[:200], exc)
            return None
        ended = found is not None and found.status in ENDED and isinstance(found.summary, dict)
        return found if ended else None

    def _answer_journaled(self, identity: bytes, record: ProjectRecord, extra: dict[str, Any]) -> None:
        """FINISHED with a run's summary from the journal; a remote submitter's outputs served for
        download again first while its output folder is there, off the loop (`OutputPublisher`:
        hashing a zoom-10 map's tiles held the loop for seconds), its ``download`` None if they cannot be."""
        summary = dict(record.summary)
        tree, folder = summary.get("download"), summary.get("output_dir")
        if not tree or not folder or self.assets.kinds.get(tree) == "outputs":  # served since this start
            if tree in self.assets.output_parts:
                summary.update(served(self.assets.output_parts[tree], None))
            self._send(identity, T.FINISHED, {"summary": summary, **extra})
            return

        def answer(trees: list[str] | None, error: str | None) -> None:
            self._send(identity, T.FINISHED, {"summary": {**summary, **served(trees, error)}, **extra})

        self._output_publisher().publish(record.project_id, tree, Path(folder), answer)  # finishing.py

    def _cancel_upload(self, identity: bytes, token: str) -> None:
        """Cancel a project that is still being uploaded: its submitter hears so, nothing ran."""
        wire = self.uploads[token][1]["project"]
        self._give_up_upload(token, "cancelled (farm cancel) before it started")
        log.info("cancelled the upload of project %s", wire.get("name"))
        summary = {"id": "", "project": wire.get("name"), "media_type": wire.get("media_type"),
                   "state": "cancelled", "jobs": {"total": 0, "done": 0, "failed": 0}, "elapsed_s": 0.0,
                   "outputs": [], "output_dir": "", "error": "cancelled while its files were being uploaded"}
        self._send(identity, T.FINISHED, {"summary": summary})

    def _send_update(self, run: ProjectRun) -> None:
        """Announce a run's progress (an event only when it changed); its followers get it as an UPDATE."""
        snap = self.scheduler.describe(run)
        if self.progress_gate.changed(run.id, snap, time.monotonic()):
            self.events.publish("progress", run.id, None, None, snap)
        for identity in list(self.followers.get(run.id, ())):
            if not self._send(identity, T.UPDATE, snap):
                self.followers[run.id].discard(identity)

    def _send_updates(self) -> None:
        for run in self.runs.values():
            # an ended run whose outputs are being published goes on being heard of: its followers
            # take a silence of seconds for a controller gone (`Client.follow`)
            if run.state in ("running", "finalizing") or run.id in self.publishing:
                self._send_update(run)

    def _announce(self, run: ProjectRun, *, resumed: bool) -> None:
        for url in run.project.notify:  # the submitter hears it in the summary's notes, not only our log
            if not self.notifier.allows(url):
                host = webhook_host(url)
                run.collate_log.warning("not sending the project's webhook to %s: this controller does not "
                                        "allow that host (farm controller --notify-allow %s)", host, host)
        self.events.publish("run.submitted", run.id, None, None,
                            {"project": run.project.name, "media_type": run.media.name, "total": run.total,
                             "priority": run.priority, "resumed": resumed})

    def _notify_finished(self, run: ProjectRun) -> None:
        self._send_update(run)  # the final counts, for bars and the event stream, before FINISHED
        summary = run.summary()
        self.progress_gate.forget(run.id)
        self._status = None  # who heard FINISHED must find the run's end in the next STATUS
        self.events.publish("run.finished", run.id, None, None,
                            {"state": run.state, "done": run.done, "failed": len(run.failures),
                             "elapsed_s": round(run.elapsed(), 3), "error": run.error,
                             **finished_details(summary)})
        for identity in self.followers.pop(run.id, set()):
            self._send(identity, T.FINISHED, {"summary": summary})

    def _prune(self) -> None:
        finished = [r for r in self.runs.values() if r.state in ENDED and r.id not in self.publishing]
        for run in finished[:-KEEP_FINISHED_RUNS]:
            del self.runs[run.id]
            self.followers.pop(run.id, None)

    def _listed_finished_before(self) -> list[dict[str, Any]]:
        """Snapshots of the journal's runs that finished before this start, while fewer than
        `KEEP_FINISHED_RUNS` finished runs are in memory."""
        finished = sum(1 for r in self.runs.values() if r.state in ENDED)
        room = KEEP_FINISHED_RUNS - finished
        records = [r for r in self.finished_before().records() if r.project_id not in self.runs]
        return [history.snapshot(r) for r in records[max(0, len(records) - room):]] if room > 0 else []

    def status(self) -> dict[str, Any]:
        """A snapshot for `farm status` (also read by tests from another thread: copies only)."""
        now = time.monotonic()
        refused = self.security.refused_keys() if self.security is not None else []
        return {
            "controller": self.url,
            "files": self.assets.endpoint,
            "agents": [{**a.describe(now), "current": self.scheduler.current_jobs(a),
                        "state": self.scheduler.agent_state(a)} for a in self.registry],
            "projects": [*self._listed_finished_before(),
                         *(self.scheduler.describe(r) for r in self.runs.values())],
            "stats": dict(self.stats),
            "refused": self.registry.refusals(time.time()),  # cut off for their key
            "refused_keys": refused,
            "revoked_keys": self.security.revoked_names(refused) if self.security is not None else {},
        }


def upload_refused(state_dir: Path, exc: OSError) -> str:
    """Why a submitted project's upload failed for the controller's own disk, as its submitter reads it."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return (f"the controller's state folder {state_dir} {'has no room for' if full else 'cannot take'} the "
            f"project's upload: {described(exc)}; make room there (or make it writable), then submit again")
