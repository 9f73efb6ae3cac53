"""The submitting client: sends a project to a controller and follows it to the end.

The embedded run and ``--controller URL`` both go through here: one code path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import zmq

from farm.endpoints import reachable
from farm.errors import ConnectionLost, ControlError, FarmError, ProtocolError
from farm.filesync import FileClient, NoAnswer, Store, TransferError
from farm.filesync.errors import DiskRefused
from farm.filesync.materialize import FULL
from farm.handshake import CLIENT_INVITE, HandshakeWatcher
from farm.keys import SecurityError
from farm.linkcheck import refuse_links
from farm.outputrecord import cancelled_note, replace_earlier
from farm.paths import unwritable
from farm.project import PROJECT_FILE, Project
from farm.protocol import MAX_MESSAGE, Message, T, pack, unpack
from farm.summary import DiskFull, DownloadLost, RunLost, Summary  # noqa: F401 (part of this module's API)

log = logging.getLogger(__name__)
R = TypeVar("R")

# The controller sends updates every 0.2 s while a project runs; silence this long means it is gone.
SILENCE_LIMIT_S = float(os.environ.get("FARM_CLIENT_TIMEOUT", "15"))
# How long a follower waits for a controller that went silent (restarting) to come back.
RECONNECT_S = float(os.environ.get("FARM_CLIENT_RECONNECT", "600"))
REFOLLOW_S = 2.0  # while it waits, it asks to follow the run again this often


class Client:
    """A DEALER connection to a controller."""

    def __init__(self, url: str, *, socket_setup: Callable[[zmq.Socket], None] | None = None,
                 timeout: float = SILENCE_LIMIT_S, unreachable_after: float | None = None) -> None:
        """`unreachable_after`: give up after this many seconds of refused connections (None: only
        after `timeout`, for a client that may start before its controller)."""
        self.url = url
        self.timeout = timeout
        self.answer_s: float | None = None  # while set (`patiently`): a reply's wait, shorter than `timeout`
        self.socket_setup = socket_setup
        self.zctx = zmq.Context.instance()
        self.sock = self.zctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        # a controller that takes the connection and never greets (stopped, stuck) is told from one
        # refusing us by that handshake's end: within our silence limit, as libzmq's 30 s at most
        self.sock.setsockopt(zmq.HANDSHAKE_IVL, int(min(timeout, 30.0) * 1000))
        if socket_setup:
            socket_setup(self.sock)
        # a refused handshake or an absent controller is otherwise just silence: watch to say why
        self.watcher = HandshakeWatcher.for_setup(self.sock, url, socket_setup, unreachable_after,
                                                  invite=CLIENT_INVITE)
        self.sock.connect(url)

    def close(self) -> None:
        self.watcher.close()
        self.sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, kind: T, body: dict[str, Any] | None = None) -> None:
        """Queue a message for the controller; `ConnectionLost` if it cannot be (`HandshakeWatcher.send`)."""
        self.watcher.send(pack(kind, body), self.answer_s or self.timeout)

    def receive(self, timeout: float | None = None) -> Message:
        limit = (self.answer_s or self.timeout) if timeout is None else timeout
        while True:
            try:
                msg = unpack(self.watcher.receive(limit))
            except ProtocolError as exc:
                log.warning("dropping a bad message from the controller: %s", exc)
                continue
            if msg.type is T.ERROR:
                if msg.body.get("code") in ControlError.CODES:
                    raise ControlError(f"controller: {msg.body['message']}", msg.body["code"])
                if msg.body.get("code") == "revoked":  # our key: nothing we may ask will be answered now
                    raise SecurityError(f"controller: {msg.body['message']}")
                raise FarmError(f"controller: {msg.body['message']}")
            return msg

    def request(self, kind: T, body: dict[str, Any] | None = None, *, expect: tuple[T, ...]) -> Message:
        """Send and wait for a reply of the expected types, passing over progress updates meanwhile."""
        self.send(kind, body)
        while True:
            msg = self.receive()
            if msg.type in expect:
                return msg

    def submit(self, project: Project, *, priority: int = 0, upload: bool = False) -> str:
        """Hand a project to the controller; returns its run id.

        With `upload`, the project's files go to the controller through the file synchroniser
        (only what it does not have already), for a controller that does not share our disk.
        """
        reply = self.request(T.SUBMIT, {"project": project.to_wire(), "priority": priority, "upload": upload},
                             expect=(T.ACCEPTED, T.UPLOAD))
        if reply.type is T.UPLOAD:
            endpoint = reachable(reply.body["files"], self.url)
            with FileClient(endpoint, socket_setup=self.socket_setup, timeout=self.timeout) as files:
                # farm.toml always: the controller loads the project from it, whatever [assets] sends agents
                paths = sorted({PROJECT_FILE, *project.assets()})
                try:
                    files.upload(reply.body["token"], project.root, paths=paths)
                except DiskRefused:  # the controller's own disk: its words follow, code controller_disk
                    self.receive()  # raises them (a ControlError)
                    raise
                log.info("uploaded %s: %d blocks sent", project.name, files.counters.blocks_sent)
            reply = self.receive()
        if reply.type is not T.ACCEPTED:
            raise ProtocolError(f"expected ACCEPTED, got {reply.type.name}")
        return reply.body["project"]

    def follow(self, run_id: str, on_update: Callable[[dict[str, Any]], None] | None = None, *,
               reconnect_s: float = 0.0, on_wait: Callable[[str], None] | None = None) -> Summary:
        """Receive updates until the run finishes; returns its summary.

        With `reconnect_s` > 0, a controller that goes silent for `REFOLLOW_S` (it sends an update
        every 0.2 s while a run goes on: it stopped, restarts, or the network is down) is waited for
        up to `reconnect_s` seconds from then, asking to follow the run again every `REFOLLOW_S`
        (a restarted controller resumes its runs from its journal), so one back within seconds is
        followed at once. `on_wait(why)` hears at once when the wait starts (why it waits and for
        how long) and `on_wait("")` when the controller answers again. Raises `RunLost` (a
        `ConnectionLost`) when it gives up, `ConnectionLost` after the client's `timeout` of
        silence without `reconnect_s`.
        """
        slice_s = min(REFOLLOW_S, self.timeout) if reconnect_s > 0 else None
        silent: tuple[float, str] | None = None  # since when it has not answered, and why we think so
        asked_again = False
        while True:
            start = time.monotonic()
            try:
                msg = self.receive(slice_s)
            except ConnectionLost as exc:
                if reconnect_s <= 0:
                    raise
                if self.watcher.hopeless:  # back, and refusing us (a revoked key): waiting won't help
                    raise
                silent = self._still_silent(run_id, silent or (time.monotonic(), str(exc)), reconnect_s,
                                            on_wait, said=silent is not None, start=start)
                asked_again = True
                continue
            except SecurityError:
                raise
            except FarmError as exc:
                if asked_again:  # it is back, and does not know the run (any more)
                    raise RunLost(str(exc), run_id) from None
                raise
            if silent is not None:
                silent = None
                if on_wait:
                    on_wait("")
            if msg.type is T.UPDATE and msg.body.get("id") == run_id:
                if on_update:
                    on_update(msg.body)
            elif msg.type is T.FINISHED and msg.body["summary"].get("id") == run_id:
                return Summary.from_wire(msg.body["summary"])

    def attach(self, run_id: str, on_update: Callable[[dict[str, Any]], None] | None = None, *,
               reconnect_s: float = 0.0, on_wait: Callable[[str], None] | None = None) -> Summary:
        """Follow a run this client did not submit (or no longer follows) to its end: its summary
        (at once for a run that has ended). Raises `FarmError` if the controller has no such run."""
        self.send(T.FOLLOW, {"project": run_id})
        return self.follow(run_id, on_update, reconnect_s=reconnect_s, on_wait=on_wait)

    def _still_silent(self, run_id: str, silent: tuple[float, str], limit: float,
                      on_wait: Callable[[str], None] | None, *, said: bool,
                      start: float) -> tuple[float, str]:
        """The controller did not answer a receive begun at `start`, again: the wait is said at its
        start (unless `said`), given up `limit` seconds after it (`RunLost`), and the run asked for
        again meanwhile, each `REFOLLOW_S`."""
        since, why = silent
        if not said and on_wait:
            on_wait(f"{why}; the controller may be restarting: waiting up to {_minutes(limit)} for it")
        if time.monotonic() - since >= limit:
            raise RunLost(f"{why}, and it did not come back within {_minutes(limit)}", run_id)
        try:  # queued while disconnected, sent once the socket reconnects (idempotent at the controller)
            self.sock.send_multipart(pack(T.FOLLOW, {"project": run_id}), zmq.NOBLOCK)
        except zmq.Again:
            pass
        # a refused handshake is said at once, not after a silence: never a busy loop
        now = time.monotonic()
        self.sock.poll(max(0.0, min(REFOLLOW_S - (now - start), since + limit - now)) * 1000)
        return silent

    def patiently(self, call: Callable[[], R], run_id: str, *, reconnect_s: float,
                  on_wait: Callable[[str], None] | None = None) -> R:
        """`call()` (a request about run `run_id`), waiting up to `reconnect_s` for a controller not there
        (yet) or silent as `follow` does, with its `on_wait` words; asked again each `REFOLLOW_S` once
        connected. `RunLost` when it gives up; a refused handshake is not waited for. A reply (not a
        file transfer) that takes `REFOLLOW_S` means the controller does not answer, as for `follow`:
        the wait is said then, not after `timeout`."""
        answer_s = self.answer_s
        if reconnect_s > 0:
            self.answer_s = min(REFOLLOW_S, self.timeout)
        try:
            return self._patiently(call, run_id, reconnect_s, on_wait)
        finally:
            self.answer_s = answer_s

    def _patiently(self, call: Callable[[], R], run_id: str, reconnect_s: float,
                   on_wait: Callable[[str], None] | None) -> R:
        why, deadline = "", time.monotonic() + reconnect_s
        while True:
            try:
                found = call()
            except RunLost:  # given up already (the call waits itself)
                raise
            except ConnectionLost as exc:
                watcher = self.watcher
                if reconnect_s <= 0 or watcher.hopeless:
                    raise
                if not why and on_wait:
                    on_wait(f"{exc}; the controller may be restarting: waiting up to {_minutes(reconnect_s)} "
                            "for it")
                why = why or str(exc)
            else:
                if why and on_wait:
                    on_wait("")
                return found
            # until an answer (to the request queued before) comes, or it connects: then ask again
            watcher, poll = self.watcher, self.sock.poll
            while (left := deadline - time.monotonic()) > 0 and not poll(min(REFOLLOW_S, left) * 1000):
                watcher.check()
                if watcher.connected or watcher.monitor is None:
                    break
            if left <= 0:
                raise RunLost(f"{why}, and it did not come back within {_minutes(reconnect_s)}", run_id)

    def download(self, summary: Summary, dest: Project | Path, *, reconnect_s: float = 0.0,
                 on_wait: Callable[[str], None] | None = None) -> Summary:
        """Bring a remote run's outputs (a finished run's, or what a cancelled one collated) into the
        local project's output folder, or into the folder `dest`; the summary then names them there.

        With `reconnect_s` > 0, a controller that stops answering meanwhile (a restart, a pause) is
        waited for as `follow` does, up to `reconnect_s` seconds from when the fetch last made
        progress; the run is then followed
        again (a restarted controller serves its outputs anew) and the fetch resumes: files fetched
        whole are not fetched again. Raises `DownloadLost` (a `RunLost`) when it gives up.
        """
        if not summary.download:
            return summary
        folder = dest.output_dir if isinstance(dest, Project) else Path(dest).absolute()
        store = Store()  # one cache for every try: what one fetched, the next has
        fetched: list[str] = []  # the files of the parts brought whole (another try goes on from the next)
        parts_done = 0
        deadline = 0.0  # of the wait for the controller: from the first failure since the fetch progressed
        refused = 0
        while True:
            files = None
            try:
                with self.files(store) as files:
                    for tree in summary.parts()[parts_done:]:
                        fetched += [entry.path for entry in files.sync(tree, folder, copy=True).entries]
                        parts_done += 1
                break
            except (ConnectionLost, TransferError) as exc:
                if reconnect_s <= 0 or not summary.id:
                    raise
                if files is not None and files.counters.blocks_fetched or not deadline:
                    deadline = time.monotonic() + reconnect_s
                # a refusal (say of a tree a restarted controller does not serve yet) is tried again once
                refused = 0 if isinstance(exc, NoAnswer | ConnectionLost) else refused + 1
                if refused > 1 or time.monotonic() >= deadline:
                    raise DownloadLost(f"the outputs of {summary.id} were not downloaded: {exc}",
                                       summary.id) from None
                log.warning("downloading the outputs of %s: %s; asking the controller again", summary.id, exc)
            except OSError as exc:
                if exc.errno not in FULL:
                    raise
                raise _disk_full(exc, summary.id, folder, store) from None
            summary = self._ended_again(summary, deadline, on_wait)
        summary.downloaded = fetched
        if summary.state == "cancelled" and not isinstance(dest, Project):  # submit() notes it after its own
            summary.notes += cancelled_note(folder, summary.downloaded)
        remote = summary.output_dir.rstrip("/") + "/"
        local = str(folder) + "/"
        summary.outputs = [local + o[len(remote):] if o.startswith(remote) else o for o in summary.outputs]
        summary.notes = [note.replace(remote, local) for note in summary.notes]  # its paths, as the outputs'
        summary.output_dir = str(folder)
        return summary

    def _ended_again(self, summary: Summary, deadline: float,
                     on_wait: Callable[[str], None] | None) -> Summary:
        """The summary of an ended run once more (waiting for its controller until `deadline`), with
        the tree its outputs are served as now; `DownloadLost` if there is none."""
        try:
            left = max(1.0, deadline - time.monotonic())
            again = self.attach(summary.id, reconnect_s=left, on_wait=on_wait)
        except FarmError as exc:  # gone for good, or back without the run
            raise DownloadLost(f"the outputs of {summary.id} were not downloaded: {exc}",
                               summary.id) from None
        if not again.download:
            raise DownloadLost(f"the outputs of {summary.id} were not downloaded: the controller no longer "
                               "serves them (is its output folder gone?)", summary.id)
        return again

    def files(self, store: Store | None = None) -> FileClient:
        """A file-synchroniser client for this controller (its endpoint comes from a STATUS), fetching
        into `store` (the user's cache if None)."""
        endpoint = reachable(self.status()["files"], self.url)
        return FileClient(endpoint, store or Store(), socket_setup=self.socket_setup, timeout=self.timeout)

    def status(self) -> dict[str, Any]:
        return self.request(T.STATUS, expect=(T.STATUS_REPLY,)).body

    def events(self, since: int | None = None, *, on_missed: Callable[[int], None] | None = None,
               renew_s: float = 10.0) -> Iterator[dict[str, Any]]:
        """The controller's events after seq `since` (None: from now on), one flat dict each, forever.

        Each event has at least ``seq``, ``time`` (epoch seconds), ``type``, ``run``, ``job`` and
        ``agent``. Events older than the controller's buffer are gone: `on_missed(count)` hears of
        them. A `since` beyond the controller's newest event (it restarted, and counts from 1
        again) gets every event the controller holds. The subscription is renewed every `renew_s` from the last event seen, so a lost
        connection resumes without a gap or a repeat.
        """
        last = since
        epoch = None  # the controller run the seqs count in: a restarted one counts again
        self.send(T.EVENTS, {"since": since})
        renewed = time.monotonic()
        while True:
            if time.monotonic() - renewed > renew_s:
                self.send(T.EVENTS, {"since": last, "epoch": epoch})
                renewed = time.monotonic()
            msg = self.receive()
            if msg.type is not T.EVENT_BATCH:
                continue
            epoch = msg.body.get("epoch") or epoch
            if msg.body.get("reset"):
                last = 0  # `since` was beyond this controller's events: it sends all it holds
            if msg.body["missed"] and on_missed is not None:
                on_missed(msg.body["missed"])
            events = msg.body["events"]
            if not events and last is None:
                last = msg.body["last"]
            for event in events:
                if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
                    raise ProtocolError(f"EVENT_BATCH: {str(event)[:80]} is not an event")
                if last is None or event["seq"] > last:
                    last = event["seq"]
                    yield event

    def cancel(self, project: str) -> Summary:
        """Cancel a project by run id or name; its summary (`Summary.already`: it had finished before,
        nothing was cancelled). Raises `ControlError`: ``not_found`` if the controller has no such
        project, ``finalizing`` if the run's jobs are done and its final outputs are being written
        (it cannot be cancelled then; it ends as done or failed)."""
        self.send(T.CANCEL_PROJECT, {"project": project})
        while True:  # a FINISHED for another run this client follows is not the answer
            reply = self.receive()
            if reply.type is T.FINISHED:
                summary = Summary.from_wire(reply.body["summary"])
                if project in (summary.id, summary.project):
                    summary.already = bool(reply.body.get("already"))
                    return summary

    # -- steering and looking (farm.controller.control); each raises ControlError with its code --

    def _control(self, action: str, **fields: Any) -> dict[str, Any]:
        body = {"action": action, **{k: v for k, v in fields.items() if v is not None}}
        return self.request(T.CONTROL, body, expect=(T.CONTROL_REPLY,)).body

    def _query(self, what: str, project: str, **fields: Any) -> dict[str, Any]:
        body = {"what": what, "project": project, **{k: v for k, v in fields.items() if v is not None}}
        return self.request(T.QUERY, body, expect=(T.QUERY_REPLY,)).body

    def pause(self, project: str) -> dict[str, Any]:
        """Lease no more of a run's jobs (agents finish what they hold): ``{"project", "paused", "running"}``.

        `project` is a run id, or a project name (its newest run). Codes: not_found; conflict when
        the run is not running, or already paused.
        """
        return self._control("pause", project=project)

    def resume(self, project: str) -> dict[str, Any]:
        """Lease a paused run's jobs again: ``{"project", "paused": False}``; conflict if it is not paused."""
        return self._control("resume", project=project)

    def retry(self, project: str, keys: list[str] | None = None) -> dict[str, Any]:
        """Run jobs that failed for good again: ``{"project", "retried": [keys], "state"}``.

        `keys`: None for every failed job, else those (an empty list retries nothing). Each gets ``max_attempts`` fresh tries; a finished, failed run goes back to running and
        finishes again. Codes: not_found (no such run, or a key it never had), conflict (a key
        that has not failed for good, a cancelled run, a run that failed for another reason).
        """
        return self._control("retry", project=project, keys=list(keys) if keys is not None else None)

    def set_priority(self, project: str, priority: int) -> dict[str, Any]:
        """Change a running run's priority (higher runs first): ``{"project", "priority", "previous"}``."""
        return self._control("priority", project=project, priority=priority)

    def drain(self, agent: str) -> dict[str, Any]:
        """Give an agent no new jobs; it finishes what it holds: ``{"agent", "state": "draining", "holding"}``."""
        return self._control("drain", agent=agent)

    def undrain(self, agent: str) -> dict[str, Any]:
        """Give a drained agent jobs again: ``{"agent", "state"}``."""
        return self._control("undrain", agent=agent)

    def project(self, project: str) -> dict[str, Any]:
        """A run's snapshot, as in ``status()["projects"]`` (with ``paused``); not_found if none."""
        return self._query("project", project)

    def jobs(self, project: str, state: str | None = None, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """A page of a run's jobs: ``{"project", "total", "offset", "limit", "unlisted", "ended", "jobs": [...]}``.

        Each job: ``{"key", "state", "attempts", "agent", "duration_s", "error"}``; `state` filters to
        one of running, collating (rendered, its outputs being collated: not yet done), queued,
        failed (for good), done (rendered), reused. Running jobs come first, then collating,
        queued, failed, and done or reused ones by key. ``unlisted`` counts jobs the media type
        has not split off yet (they are not listed); ``ended``: the run is over, so they (and any
        queued or running when it was cancelled) never will be done. `limit` is 1..1000.
        """
        return self._query("jobs", project, state=state, offset=offset, limit=limit)

    def job_log(self, project: str, key: str) -> dict[str, Any]:
        """One job's recent attempts, oldest first: ``{"project", "key", "attempts": [...]}``.

        Each attempt: ``{"attempt", "agent", "state", "error", "duration_s", "log"}`` (the log's
        tail). not_found if the run never had the job.
        """
        return self._query("log", project, key=key)


def submit(url: str, project: Project, *, priority: int = 0,
           on_update: Callable[[dict[str, Any]], None] | None = None,
           socket_setup: Callable[[zmq.Socket], None] | None = None, upload: bool = False,
           unreachable_after: float | None = None, reconnect_s: float = 0.0,
           on_wait: Callable[[str], None] | None = None) -> Summary:
    """Submit a project and follow it to the end (uploading it and downloading its outputs if asked).

    `reconnect_s`, `on_wait`: waiting out a controller restart, as `Client.follow` (and while the
    outputs download, as `Client.download`). An uploaded
    run whose controller made no outputs comes back with ``output_dir`` "" (nothing of ours to name).
    """
    if upload:  # its outputs are downloaded into the output folder: never through a link there
        refuse_links(project.root, project.output, "a project's output folder")
        why = unwritable(project.root, project.output)  # found before the render, not at the download
        if why is not None:
            raise FarmError(why)
    with Client(url, socket_setup=socket_setup, unreachable_after=unreachable_after) as client:
        run_id = client.submit(project, priority=priority, upload=upload)
        summary = client.follow(run_id, on_update, reconnect_s=reconnect_s, on_wait=on_wait)
        if not upload:
            return summary
        if summary.download_error:  # outputs it cannot serve: never a silent empty download
            summary.error = "; ".join(filter(None, [summary.error, summary.download_error]))
        elif not summary.download:  # its output folder is on the controller's disk, and holds nothing
            summary.output_dir = ""
        else:
            summary = client.download(summary, project, reconnect_s=reconnect_s, on_wait=on_wait)
        # an earlier run's final outputs must not pass for these
        replace_earlier(project, summary.outputs, summary.downloaded or [])
        if summary.download and summary.state == "cancelled":  # which files there are not its own
            summary.notes += cancelled_note(project.output_dir, summary.downloaded or [])
        return summary


def _disk_full(exc: OSError, run_id: str, folder: Path, store: Store) -> DiskFull:
    """A download that found no room, naming where: the output folder, or the cache it fetches into."""
    where = str(exc.filename2 if exc.filename2 is not None else exc.filename or "")
    if where.startswith(str(store.root) + os.sep) and not where.startswith(str(folder) + os.sep):
        return DiskFull(f"no space left on device filling the download cache {store.root} with the outputs "
                        f"of {run_id}", run_id, str(store.root))
    return DiskFull(f"no space left on device writing the outputs of {run_id} into {folder}", run_id,
                    str(folder))


def _minutes(seconds: float) -> str:
    return f"{round(seconds / 60, 1):g} min" if seconds >= 60 else f"{round(seconds, 1):g}s"
