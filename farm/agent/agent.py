"""The agent: one per render node, and its link to the controller.

It introduces itself to the controller (slots, capabilities), takes up to its credit
of jobs, has its pool (`farm.agent.pool`: one long-lived worker process per slot) run
them, and returns results. It watches the controller's heartbeats and reconnects with
backoff when they stop, so it outlives controller restarts.
"""

from __future__ import annotations

import collections
import logging
import math
import operator
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from farm import __version__, gcpolicy, wireversion
from farm.agent.capabilities import detect
from farm.agent.drain import drain
from farm.agent.intake import screen, take_ready
from farm.agent.outbox import Forwarded, Outgoing, checked, flush, stale_leases
from farm.agent.pool import EarlyWorkers, Pool
from farm.agent.scratch import claim as claim_scratch
from farm.agent.sync import AssetSync
from farm.agent.trust import project_refusal
from farm.controller.policy import NODE_FAULT
from farm.endpoints import reachable
from farm.errors import ProtocolError
from farm.filesync.errors import source_edited
from farm.handshake import NOTHING_LISTENS_AFTER_S, HandshakeWatcher
from farm.ids import check_name
from farm.plugins import get_plugins
from farm.protocol import MAX_MESSAGE, JobResult, JobSpec, T, pack, unpack
from farm.words import capabilities_shown, counted

log = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 32.0
BAD_MESSAGES_LOGGED = 20  # then one line per 1000
MAX_REFUSED_PROJECTS = 1024  # remembered refusals; a controller cycling ids cannot grow memory
REFUSAL_CHECK_S = 0.05  # the connection's handshake events read this often, not every turn (~5 us each)
_LEASE, _PROJECT = operator.attrgetter("lease"), operator.attrgetter("project")  # of a JobSpec


class Agent:
    def __init__(
        self,
        controller: str,
        *,
        slots: int | None = None,
        prefetch: int = 256,
        tags: list[str] | None = None,
        agent_id: str | None = None,
        heartbeat: float = 1.0,
        liveness: int = 5,
        scratch: Path | None = None,
        parent_pid: int | None = None,
        socket_setup: Callable[[zmq.Socket], None] | None = None,
        cache_dir: Path | None = None,
        cache_bytes: int | None = None,
        on_connect: Callable[[str], None] | None = None,
        local_assets: bool = False,
        peers: bool = True,
        workers: EarlyWorkers | None = None,
        node: str | None = None,
    ) -> None:
        """`on_connect(line)`: called with ``connected to URL as NAME, N slots, [CAPABILITIES]`` at each
        welcome: the capabilities its HELLO offers, as `farm status` lists them (`capabilities_shown`).
        ``workers``: a pool started ahead of us (`EarlyWorkers`; its slots and scratch folder win).
        ``node``: this node's token for our id (`farm.agent.nodetoken`), proving a restart is us."""
        self.controller = controller
        self.nslots = slots or os.cpu_count() or 1
        self.prefetch = prefetch
        self.tags = tags or []
        self.id = check_name(agent_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                             "agent id")
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.parent_pid = parent_pid
        self.socket_setup = socket_setup
        if workers is None:
            self.scratch_hold = claim_scratch(scratch)  # and removes what dead agents left
            self.zctx = zmq.Context()
            self.pool = Pool(self.nslots, self.scratch_hold.path, self.zctx, self)
        else:
            self.scratch_hold, self.zctx, self.pool = workers.hold, workers.zctx, workers.pool
            self.nslots = len(self.pool.slots)
            self.pool.outcomes = self
        self.scratch = self.scratch_hold.path
        self.ctrl: zmq.Socket | None = None
        self.queue: collections.deque[JobSpec] = collections.deque()
        self.projects: dict[str, dict[str, Any]] = {}
        self.refused: dict[str, str] = {}  # project id -> why this agent will not work on it
        self.ready: set[str] = set()  # projects whose assets are here
        self.files_endpoint: str | None = None
        self.sync = AssetSync(cache_dir, cache_bytes, self.scratch, socket_setup, local=local_assets,
                              peers=peers, agent=self.id)
        self.held: set[str] = set()
        self.outgoing: list[Outgoing] = []  # farm.agent.outbox
        # results of projects placed from the controller's folder, checked once per turn before they go;
        # leases that were running on placed files found edited -> why (farm.agent.outbox.checked)
        self.unchecked: list[tuple[JobResult | Forwarded, list[bytes], str]] = []
        self.stale: dict[str, str] = {}
        self.connected = False
        self.stopping = False
        self.last_recv = self.last_send = 0.0
        self.backoff = BACKOFF_START_S
        self.reconnect_at = self.refusal_check_at = 0.0
        self.bad_messages = 0
        self.reintroduce = False
        self.watcher: HandshakeWatcher | None = None
        self.refusal_logged: str | None = None  # the last connection problem logged
        self.absent_level = logging.WARNING  # nobody at the address (yet): we retry on, so no ERROR
        self.refused_role: str | None = None  # why the controller will not take our key as an agent's
        self.on_connect = on_connect
        self.caps, self.missing, self.media_types = detect(self.tags)
        self.session = uuid.uuid4().hex  # shown only to the controller: proves a reconnect is us
        self.node = node

    # -- lifecycle -----------------------------------------------------------------

    def run(self) -> None:
        self._install_signals()
        self.pool.start()
        self._connect()
        log.info("agent %s: %s, capabilities %s", self.id, counted(self.nslots, "slot"),
                 ", ".join(self.caps) or "none")
        gcpolicy.loop_started()  # jobs in flight here too: young collections far apart (farm.gcpolicy)
        try:
            self._loop()
        finally:
            self._close()
            gcpolicy.loop_ended()

    def stop(self) -> None:
        self.stopping = True

    def _install_signals(self) -> None:
        try:
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        except ValueError:  # not the main thread (tests run agents in threads)
            pass

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pool.socket, zmq.POLLIN)
        registered = None
        while not self.stopping:
            if registered is not self.ctrl:
                if registered is not None:
                    poller.unregister(registered)
                if self.ctrl is not None:
                    poller.register(self.ctrl, zmq.POLLIN)
                registered = self.ctrl
            events = dict(poller.poll(20 if self.sync.busy else 100))
            if self.ctrl is not None and events.get(self.ctrl):
                drain(self.ctrl, self._on_controller)  # bounded, so the controller cannot starve the workers
            if self.reintroduce:
                self.reintroduce = False
                self._connect()
            if events.get(self.pool.socket):
                self.pool.drain()
            for synced in self.sync.finished():
                self._synced(synced.project, synced.folder, synced.error, synced.node_fault)
            now = time.monotonic()
            self.pool.check(now, self.stopping)
            if self.pool.broken and self.queue:  # jobs sent before the controller heard: give them back
                self.report_state()
            if self.queue:
                self.pool.feed(now, self._take, self.projects.__getitem__)
            self._flush_results()
            self._check_controller(now)
            if self.parent_pid and os.getppid() != self.parent_pid:
                log.warning("parent process %d is gone; stopping", self.parent_pid)
                break

    def _close(self) -> None:
        if self.ctrl is not None and self.connected:
            self._send(T.BYE)  # the controller requeues what we held, at no cost to the jobs
        self.pool.close()
        self.sync.close()
        self._close_ctrl(linger=500)
        self.zctx.term()
        self.scratch_hold.release()

    # -- controller side -------------------------------------------------------------

    def _connect(self) -> None:
        self._close_ctrl(linger=0)
        self.ctrl = self.zctx.socket(zmq.DEALER)
        self.ctrl.setsockopt(zmq.LINGER, 0)
        # a fresh routing id per connection; the controller knows us by our id and session instead
        self.ctrl.setsockopt(zmq.IDENTITY, self.id.encode()[:64] + b"/" + uuid.uuid4().hex.encode())
        self.ctrl.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        if self.socket_setup:
            self.socket_setup(self.ctrl)
        self.watcher = HandshakeWatcher.for_setup(self.ctrl, self.controller, self.socket_setup,
                                                  NOTHING_LISTENS_AFTER_S)  # logged once, retried on
        self.ctrl.connect(self.controller)
        self.connected = False
        now = time.monotonic()
        self.last_recv = now
        self._send(T.HELLO, self._hello_body())

    def _hello_body(self) -> dict[str, Any]:
        body = {
            "agent": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slots": self.nslots,
            "prefetch": self.prefetch,
            "caps": self.caps,
            "missing": self.missing,
            "held": sorted(self.held),
            "version": __version__,
            "session": self.session,
            "plugins": get_plugins().versions(),  # a controller with other versions sends us none of theirs
        }
        if self.node:
            body["node"] = self.node
        if self.pool.broken:
            body["broken"] = self.pool.broken
        return body

    def _send(self, kind: T, body: dict[str, Any] | None = None, payloads: list[bytes] | None = None) -> bool:
        return self._send_frames(pack(kind, body, payloads or ()))

    def _send_frames(self, frames: list[bytes]) -> bool:
        assert self.ctrl is not None
        try:
            self.ctrl.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:  # controller unreachable and queue full: liveness will reconnect
            return False
        self.last_send = time.monotonic()
        return True

    def _close_ctrl(self, linger: int) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.ctrl is not None:
            self.ctrl.close(linger=linger)

    def _check_refusal(self) -> None:
        """Say why the connection does not come up (refused key, wrong server key, nobody there...):
        once per cause until a connection works, else it is just silence."""
        problem = self.watcher.check() if self.watcher is not None else None
        if problem is not None and problem != self.refusal_logged:
            self.refusal_logged = problem
            if self.watcher is not None and self.watcher.absent:
                log.log(self.absent_level, "%s (still trying)", problem)
            else:
                log.error("%s", problem)
        watcher = self.watcher  # no keys for a controller that wants them, or ours revoked there: stop
        if problem is not None and watcher is not None and (watcher.lacks_keys or watcher.revoked):
            self.refused_role, self.connected, self.stopping = problem, False, True

    def _check_controller(self, now: float) -> None:
        if now >= self.refusal_check_at:
            self.refusal_check_at = now + REFUSAL_CHECK_S
            self._check_refusal()
        if now - self.last_recv > self.heartbeat * self.liveness:
            if self.reconnect_at == 0.0:
                self.reconnect_at = now + self.backoff * random.uniform(0.5, 1.0)
                # silence after its cause was said (a refused key, nobody there) is no news at each retry
                level = logging.WARNING if self.refusal_logged is None else logging.DEBUG
                log.log(level, "controller silent for %.1fs; reconnecting in %.1fs%s", now - self.last_recv,
                        self.reconnect_at - now, wireversion.silence_hint(self.connected))
                self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
            elif now >= self.reconnect_at:
                self.reconnect_at = 0.0
                self._connect()
        elif now - self.last_send >= self.heartbeat:
            self._send(T.HEARTBEAT)

    def _on_controller(self, frames: list[bytes]) -> None:
        try:
            msg = unpack(frames)
            self.last_recv = time.monotonic()
            self._on_message(msg)
        except ProtocolError as exc:
            refused = wireversion.heard(frames, self.controller)  # refused for our protocol version: stop
            if refused is not None:
                log.error("%s", refused)
                self.refused_role, self.connected, self.stopping = refused, False, True
            else:
                self._bad_message(str(exc))
        except Exception as exc:  # whatever a controller sends, the agent stays up
            self._bad_message(f"could not be handled: {type(exc).__name__}: {exc}", exc)

    def _bad_message(self, why: str, exc: Exception | None = None) -> None:
        self.bad_messages += 1
        if self.bad_messages <= BAD_MESSAGES_LOGGED or self.bad_messages % 1000 == 0:  # a flood stays quiet
            log.warning("dropping bad message %d from controller: %s", self.bad_messages, why[:500],
                        exc_info=exc is not None and log.isEnabledFor(logging.DEBUG))

    def _on_message(self, msg: Any) -> None:
        if msg.type is T.WELCOME:
            joined, self.connected = not self.connected, True
            self.backoff = BACKOFF_START_S
            heartbeat = float(msg.body["heartbeat"])  # a controller's whim, bounded
            if math.isfinite(heartbeat):
                self.heartbeat = min(max(heartbeat, 0.05), 60.0)
            self.liveness = min(max(int(msg.body["liveness"]), 1), 1000)
            if msg.body.get("files"):
                self.files_endpoint = reachable(msg.body["files"], self.controller)
            self.refusal_logged = None
            if joined:  # once per connection, not per re-sent HELLO
                self._joined(msg.body.get("agent") or self.id)
                if isinstance(msg.body.get("warning"), str):
                    log.warning("the controller says: %s", msg.body["warning"][:1000])
            named = msg.body.get("agent")
            if isinstance(named, str) and self.sync.peers is not None:
                self.sync.peers.agent = named  # peers and the tracker know us by the controller's name
            if named not in (None, self.id):
                log.warning("another live agent already uses the id %r at %s; this one is known there as %r "
                            "(give each agent its own --id)", self.id, self.controller, msg.body["agent"])
        elif msg.type is T.JOBS:
            projects = msg.body["projects"]
            for project_id, description in (projects.items() if isinstance(projects, dict) else ()):
                self._describe(project_id, description)
            self._queue_jobs(JobSpec.from_rows(msg.body["jobs"]))
        elif msg.type is T.CANCEL:
            self._cancel(set(msg.body["leases"]))
        elif msg.type is T.ERROR and msg.body.get("code") in ("key_role", "revoked"):  # may not serve: stop
            log.error("the controller refuses us as an agent: %s", msg.body["message"])
            self.refused_role, self.connected, self.stopping = str(msg.body["message"]), False, True
        elif msg.type is T.ERROR:  # the controller does not know us (it restarted): introduce ourselves
            log.info("controller says: %s", msg.body["message"])
            self.reintroduce = True
        elif msg.type is T.SHUTDOWN:
            log.info("controller asked us to shut down")
            self.connected = False  # no BYE needed
            self.stopping = True

    def _queue_jobs(self, jobs: list[JobSpec]) -> None:
        """Queue a JOBS message's jobs, in order, failing each this agent refuses with why."""
        taken, refusals = screen(jobs, self.projects, self.refused)
        for job, why in refusals:
            log.warning("refusing job %r of project %r: %s", job.key[:80], job.project[:80], why)
            self.fail(job, f"refused by the agent: {why}")
        if taken:
            self.queue.extend(taken)
            self.held.update(map(_LEASE, taken))
            for project in dict.fromkeys(map(_PROJECT, taken)):  # in the order they came
                self._fetch_assets(project)

    def _joined(self, name: str) -> None:
        # what the controller knows it by, as `farm status` says it: a media type's renderer (blender
        # for frames) and --tag values too, not only the media types (they differed)
        line = (f"connected to {self.controller} as {name}, {counted(self.nslots, 'slot')}, "
                f"{capabilities_shown(self.caps)}")
        log.info("%s", line)
        if self.on_connect is not None:
            self.on_connect(line)

    def _describe(self, project_id: str, description: Any) -> None:
        """Take in (or refuse) a project as the controller describes it; ids and shapes are checked."""
        why = project_refusal(project_id, description, self.media_types)
        if why is not None:
            if len(self.refused) >= MAX_REFUSED_PROJECTS:
                self.refused.clear()
            self.refused[project_id] = why
            if self.projects.pop(project_id, None) is not None:  # known until now: its queued jobs go too
                self.ready.discard(project_id)
                self._synced(project_id, None, why)
            return
        self.refused.pop(project_id, None)
        known = self.projects.get(project_id)
        if known is not None and {**known, "root": None} == {**description, "root": None}:
            return  # described again after a reconnect: the files here still serve
        self.ready.discard(project_id)
        self.pool.forget_project(project_id)
        # root is the agent's own folder once the files are here; never the controller's word
        self.projects[project_id] = {**description, "root": None}

    def _fetch_assets(self, project: str) -> None:
        """Start bringing a project's files here, unless they are here or on their way."""
        if project in self.ready or project in self.sync.busy:
            return
        assets = self.projects[project]["assets"]
        if self.files_endpoint is None:
            self._synced(project, None, "the controller did not say where its file service is")
        else:
            self.sync.start(project, self.files_endpoint, assets["tree"], assets.get("local"))

    def _synced(self, project: str, folder: Path | None, error: str | None, node_fault: bool = False) -> None:
        if folder is not None and project in self.projects:
            self.projects[project] = {**self.projects[project], "root": str(folder)}
            self.ready.add(project)
            return
        error = error or self.refused.get(project, "the controller withdrew the project meanwhile")
        retry, kept = not source_edited(error), collections.deque()
        for job in self.queue:  # the controller will try these again, here or elsewhere
            if job.project == project and node_fault:  # this node's want, not the job's: no attempt spent
                self.hand_back(job, f"{NODE_FAULT}{error}")
            elif job.project == project:  # a source edited since: no attempt anywhere can fetch it
                self.fail(job, f"cannot fetch the project's files: {error}", retry=retry)
            else:
                kept.append(job)
        self.queue = kept

    def _cancel(self, leases: set[str]) -> None:
        self.queue = collections.deque(j for j in self.queue if j.lease not in leases)
        self.pool.cancel(leases)
        self.held -= leases

    def _flush_results(self) -> None:
        if self.unchecked:
            self._check_placed()
        if self.outgoing and self.ctrl is not None:
            flush(self.outgoing, self._send_frames)

    # -- what the pool tells us (farm.agent.pool.Outcomes) -------------------------------

    def fail(self, job: JobSpec, error: str, log_text: str = "", *, requeue: bool = False,
             duration: float = 0.0, retry: bool = True) -> None:
        """`duration`: seconds the job ran before it failed (a timeout, a crash); 0: it never started."""
        self.held.discard(job.lease)
        self.outgoing.append((JobResult(job.lease, False, error=error, log=log_text, requeue=requeue,
                                        duration=duration, retry=retry), []))

    def hand_back(self, job: JobSpec, why: str) -> None:
        """A job that never started here: the controller runs it again without counting an attempt."""
        self.fail(job, f"not started: {why}", requeue=True)

    def deliver(self, result: JobResult, files: list[bytes], project: str) -> None:
        self.held.discard(result.lease)
        if project in self.sync.views or self.stale:
            self.unchecked.append((result, files, project))
        else:
            self.outgoing.append((result, files))

    def forward(self, body: bytes, leases: list[str], projects: list[str]) -> None:
        """A worker's results (its RESULTS body, their leases), all of whose jobs ran here: sent on."""
        self.held.difference_update(leases)
        item = Forwarded(body, leases, projects)
        if not self.sync.views.keys().isdisjoint(projects) or self.stale:
            self.unchecked.append((item, [], projects[0]))
        else:
            self.outgoing.append((item, []))

    def _check_placed(self) -> None:
        """Fail the results of jobs whose project files were edited in place while they ran (one
        look per project and turn, however many results came), and place those files afresh."""
        # one look per project: only the first reports a change (`changed` forgets a view it found changed)
        results, moved = checked(self.unchecked, self.sync.changed, self.stale)
        self.outgoing.extend(results)
        self.unchecked.clear()
        if self.stale:  # leases that ended otherwise (cancelled, their worker died) are looked for no more
            self.stale = {lease: why for lease, why in self.stale.items() if lease in self.held}
        for project, why in moved.items():
            if why is not None:  # its workers' jobs read those files too; they load it afresh after
                self.stale.update(stale_leases(self.pool.slots, project, why))
                self.pool.forget_project(project)
                self.ready.discard(project)
                if project in self.projects:
                    self._fetch_assets(project)

    def progress(self, lease: str, fraction: float) -> None:
        if self.ctrl is not None:
            self._send(T.PROGRESS, {"lease": lease, "fraction": fraction})

    def report_state(self) -> None:
        """Tell the controller whether we are broken, holding only the jobs that are running.

        Jobs still queued here are dropped from what we hold; the controller runs them elsewhere
        without counting an attempt or a hand-back against anyone.
        """
        for job in self.queue:
            self.held.discard(job.lease)
        self.queue.clear()
        if self.ctrl is not None:
            self._send(T.HELLO, self._hello_body())

    def _take(self, count: int) -> list[JobSpec]:
        """Up to `count` queued jobs whose project's files are here, in order."""
        return take_ready(self.queue, self.ready, count)
