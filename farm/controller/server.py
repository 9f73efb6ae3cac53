"""The controller's event loop: one ROUTER socket for agents and submitting clients.

Single-threaded by design: every piece of scheduling state is touched by this loop
alone, so there are no locks. Only `finalize` (which may encode a video for minutes)
runs in a helper thread, so heartbeats never wait on it.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import logging
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import zmq
from blake3 import blake3

from farm.controller import peers
from farm.controller.assets import AssetService
from farm.controller.intake import DEFAULT_INTAKE_LIMITS, Intake, IntakeLimits, IntakeQueue, Prepared
from farm.controller.jobcache import JobCache, assets_digest
from farm.controller.policy import STUCK_GRACE_S, cannot_arrive
from farm.controller.registry import AgentState, Registry
from farm.controller.run import Lease, ProjectRun
from farm.errors import FarmError, ProtocolError
from farm.filesync import Manifest, SyncError, UploadResult
from farm.ids import BadIdentifier, check_key, check_name
from farm.journal import Journal, JournalError
from farm.paths import UnsafePath, private_dir, safe_relpath
from farm.plugins import get_media_type, get_plugins
from farm.project import load_project
from farm.protocol import Message, T, pack, unpack
from farm.security import ServerSecurity, authenticated_id

log = logging.getLogger(__name__)

AGENT_MESSAGES = {T.HELLO, T.RESULTS, T.PROGRESS, T.HEARTBEAT, T.BYE}
CLIENT_MESSAGES = {T.SUBMIT, T.STATUS, T.CANCEL_PROJECT, T.FOLLOW}
UPDATE_EVERY_S = 0.2
LEASE_CHECK_EVERY_S = 1.0
MAX_MESSAGE = peers.MAX_MESSAGE
STATUS_SNAPSHOT_S = 0.25  # STATUS is answered from a snapshot at most this old: a flood costs a send each
MAX_PENDING_UPLOADS = 64  # expected uploads, all clients together; the oldest is given up past it
MAX_FOLLOWERS = 256  # clients following one run
KEEP_FINISHED_RUNS = 50
JOURNAL_FILE = "journal.sqlite"
MAX_BROKEN_TEXT = 4000  # characters of a broken agent's error kept and shown


class Controller:
    #: for a farm whose agents are all known (the embedded one): their exit codes, None while running;
    #: None for an open farm, where an agent may join at any time
    local_agents: Callable[[], list[int | None]] | None = None

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:5555",
        *,
        state_dir: Path,
        heartbeat: float = 1.0,
        liveness: int = 5,
        security: ServerSecurity | None = None,
        intake_limits: IntakeLimits = DEFAULT_INTAKE_LIMITS,
    ) -> None:
        self.bind = bind
        self.intake_limits = intake_limits
        self.state_dir = Path(state_dir).absolute()  # uploads and staging are named by absolute paths
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.security = security
        self.url: str | None = None
        self.registry = Registry()
        self.runs: dict[str, ProjectRun] = {}
        self.leases: dict[str, Lease] = {}  # lease id -> lease, across runs
        self.followers: dict[str, set[bytes]] = {}
        self.finalizing: dict[str, concurrent.futures.Future[list[str]]] = {}
        self.budgets = peers.PeerBudgets()
        self._status: tuple[float, list[bytes]] | None = None  # (when, packed STATUS_REPLY)
        self.stats = {"dispatched": 0, "collated": 0, "stale": 0, "bad_messages": 0, "max_held": 0,
                      "handler_errors": 0, "loop_errors": 0}
        self._stop = threading.Event()
        self._shutdown_agents = False
        self._probes: list[float] = []
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="farm-finalize")

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Controller:
        """Run the loop in a background thread (the embedded controller); returns once bound."""
        self._thread = threading.Thread(target=self._run_guarded, name="farm-controller", daemon=True)
        self._thread.start()
        self._bound.wait(30)
        if self._error:
            raise self._error
        return self

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self._error = exc
            self._bound.set()
            log.exception("controller loop crashed")

    def stop(self, timeout: float = 10.0, *, shutdown_agents: bool = False) -> None:
        """Stop the loop; with shutdown_agents, tell connected agents to exit too (embedded runs)."""
        self._shutdown_agents = shutdown_agents
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._executor.shutdown(wait=True, cancel_futures=False)

    @property
    def crash(self) -> BaseException | None:
        """What ended the loop, if it did not end by `stop()`."""
        return self._error

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the loop to end (a stop, or a crash); True if it is still running."""
        if self._thread is None:
            return False
        self._thread.join(timeout)
        return self._thread.is_alive()

    def __enter__(self) -> Controller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        """The loop; returns after `stop()`, telling connected agents to shut down only if asked."""
        for folder in (self.state_dir, self.state_dir / "uploads", self.state_dir / "staging",
                       self.state_dir / "cache"):
            private_dir(folder)  # projects, outputs and journal are the submitters' business alone
        lock = _lock_state_dir(self.state_dir)
        zctx = zmq.Context.instance()
        self.sock = zctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable sends raise instead of vanishing
        # No ROUTER_HANDOVER: a peer that connects with a live routing id is refused, never handed
        # that peer's traffic; agents take a fresh random routing id per connection instead.
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        if self.security:
            self.security.socket_setup(self.sock)
        self.journal = Journal(self.state_dir / JOURNAL_FILE)
        try:
            self.url = _bind(self.sock, self.bind)
        except zmq.ZMQError as exc:
            self.sock.close(linger=0)
            self.journal.close()
            lock.close()
            raise FarmError(f"cannot listen on {self.bind}: {exc}") from None
        self.assets = AssetService(self.bind if self.bind.startswith("tcp://") else self.url, self.state_dir,
                                   self.security)
        self.uploads: dict[str, tuple[bytes, dict[str, Any], Path]] = {}  # token -> (client, SUBMIT, folder)
        self.intake = IntakeQueue(self.assets.hashes, self.intake_limits)
        self.cache = JobCache(self.state_dir / "cache", self.journal)
        self._resume()
        log.info("controller listening on %s", self.url)
        self._bound.set()
        last_updates = last_lease_check = 0.0
        # A closed connection (an agent process that died) is noticed at once through the
        # socket monitor; heartbeats remain the rule for peers that go silent.
        monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        quiet = zmq.Poller()  # the monitor alone, while a flood is being paced
        quiet.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                due = self.journal.flush_due_in()
                wait_ms = 50 if due is None else min(50, max(1, int(due * 1000)))
                if self.budgets.flooded():  # mostly dropped last turn: let the others run a moment first
                    events = dict(quiet.poll(min(wait_ms, peers.FLOOD_PAUSE_MS)))
                    events[self.sock] = zmq.POLLIN
                else:
                    events = dict(poller.poll(wait_ms))
                if events.get(self.sock):
                    self._drain()
                now = time.monotonic()
                if events.get(monitor):
                    while monitor.poll(0):
                        monitor.recv_multipart()
                    # the pipe may close a moment after the event: probe now and twice more
                    self._probes = [now, now + 0.05, now + 0.5]
                if self._probes and now >= self._probes[0]:
                    self._probes.pop(0)
                    self._probe_agents()
                self.journal.tick(now)
                for upload in self.assets.finished_uploads():
                    self._fenced(upload.token.encode(), self._uploaded, upload)
                for intake in self.intake.finished():
                    self._fenced(intake.identity, self._intake_done, intake)
                try:  # a state a peer provoked must not end the loop either (the journal failing does)
                    self._dispatch(now)
                    self._check_agents(now)
                    if now - last_lease_check >= LEASE_CHECK_EVERY_S:
                        last_lease_check = now
                        self._check_leases(now)
                    self._check_finalizing()
                    if now - last_updates >= UPDATE_EVERY_S:
                        last_updates = now
                        self._send_updates()
                except JournalError:
                    raise
                except Exception:
                    self.stats["loop_errors"] += 1
                    if self.stats["loop_errors"] <= 20 or self.stats["loop_errors"] % 1000 == 0:
                        log.exception("controller loop error (%d so far); carrying on", self.stats["loop_errors"])
        finally:
            if self._shutdown_agents:
                for agent in self.registry:
                    self._send(agent.identity, T.SHUTDOWN)
            self.sock.disable_monitor()
            monitor.close(linger=0)
            self.sock.close(linger=500 if self._shutdown_agents else 0)
            self.intake.close()
            self.assets.close()
            self.journal.close()
            lock.close()

    def _resume(self) -> None:
        """Take up the projects a previous incarnation left unfinished (after a crash or kill)."""
        for record in self.journal.unfinished_projects():
            wire = record.wire
            try:
                project = load_project(wire["root"], output=wire.get("output"))
                media = get_media_type(project.media_type)
            except (FarmError, KeyError, TypeError) as exc:
                log.error("cannot resume project %s: %s", record.project_id, exc)
                self.journal.finish_project(record.project_id, "failed", {"error": f"cannot resume: {exc}"})
                continue
            run = ProjectRun(record.project_id, project, media, self.journal, priority=record.priority)
            try:
                self._prepare(run)
            except SyncError as exc:
                run.finished([], f"cannot publish its assets: {exc}")
                self.journal.finish_project(run.id, run.state, run.summary())
                continue
            run.uploaded = bool(wire.get("uploaded"))
            self.runs[run.id] = run
            log.info("resumed project %s: %d jobs already done", run.id, run.done)

    # -- messages ------------------------------------------------------------------

    def _drain(self) -> None:
        """Read and handle a bounded number of messages, each peer within its budget (`farm.controller.peers`)."""
        secured = self.security is not None
        budgets = self.budgets
        budgets.new_turn()
        now = time.monotonic()
        for _ in range(peers.PER_TURN):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=not secured)
            except zmq.Again:
                return
            key = None
            if secured:
                assert self.security is not None
                key = authenticated_id(frames[0])  # who the peer proved to be, not who it says it is
                frames = [f.bytes for f in frames]
                if not self.security.allows(key):
                    self._bad(frames[0], "its key is not (or no longer) allowed")
                    continue
            identity, *rest = frames
            if not budgets.admit(identity, self.registry.get(identity) is not None, now):
                continue  # over its budget this turn, or ignored for garbage: dropped unread
            try:
                msg = unpack(rest)
            except ProtocolError as exc:
                self._bad(identity, str(exc))
                continue
            self._fenced(identity, self._handle, identity, msg, key)

    def _fenced(self, identity: bytes, handler: Any, *args: Any) -> None:
        """Run one handler; whatever it raises is answered and logged, and the loop goes on."""
        try:
            handler(*args)
        except ProtocolError as exc:
            self._bad(identity, str(exc))
        except Exception as exc:
            self.stats["handler_errors"] += 1
            log.exception("handling a message from %r failed", identity[:32])
            self._send(identity, T.ERROR, {"message": f"the controller could not handle that message: "
                                                      f"{type(exc).__name__}: {str(exc)[:500]}"})

    def _bad(self, identity: bytes, why: str) -> None:
        self.stats["bad_messages"] += 1
        count = self.budgets.strike(identity)
        if count < peers.BAD_BEFORE_IGNORING:
            log.warning("dropping bad message from %r: %s", identity[:32], why)
        elif count == peers.BAD_BEFORE_IGNORING:
            log.warning("%r keeps sending bad messages; ignoring it for %gs", identity[:32], peers.IGNORE_FOR_S)
            agent = self.registry.get(identity)
            if agent is not None:
                self._drop_agent(agent, "sent too many bad messages")

    def _probe_agents(self) -> None:
        """After a connection closed: drop agents that are no longer routable (the event names no one)."""
        for agent in self.registry:
            try:
                self.sock.send_multipart([agent.identity, *pack(T.HEARTBEAT)], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    self._drop_agent(agent, "its connection closed")

    def _send(self, identity: bytes, kind: T, body: dict[str, Any] | None = None) -> bool:
        try:
            self.sock.send_multipart([identity, *pack(kind, body)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH (gone) or EAGAIN (not reading)
            log.debug("cannot send %s to %r: %s", kind.name, identity[:32], exc)
            return False
        agent = self.registry.get(identity)
        if agent is not None:  # whatever we send an agent is a heartbeat too
            agent.last_sent = time.monotonic()
        return True

    def _handle(self, identity: bytes, msg: Message, key: str | None = None) -> None:
        if msg.type in CLIENT_MESSAGES:
            self._handle_client(identity, msg)
            return
        if msg.type not in AGENT_MESSAGES:
            raise ProtocolError(f"{msg.type.name} is not a message a controller accepts")
        if msg.type is T.HELLO:
            self._hello(identity, msg.body, key)
            return
        agent = self.registry.get(identity)
        if agent is None:  # e.g. we restarted under a running agent: make it introduce itself
            self._send(identity, T.ERROR, {"message": "unknown agent: say HELLO"})
            return
        if agent.key != key:
            raise ProtocolError(f"message for agent {agent.id} signed by another key")
        agent.last_seen = time.monotonic()
        if msg.type is T.RESULTS:
            for result in msg.body["results"]:  # a NaN job time would poison the agent's mean, and dispatch
                if not 0.0 <= result["duration"] < math.inf:
                    raise ProtocolError(f"RESULTS: duration {result['duration']!r} is not a time in seconds")
            self._results(agent, msg)
        elif msg.type is T.PROGRESS:
            lease = self.leases.get(msg.body["lease"])
            if lease is not None and lease.agent == identity:
                fraction = float(msg.body["fraction"])
                if not math.isfinite(fraction):
                    raise ProtocolError(f"PROGRESS: fraction {fraction!r} is not a number")
                lease.run.progress[lease.job.key] = min(max(fraction, 0.0), 1.0)
        elif msg.type is T.BYE:
            self._drop_agent(agent, "agent left")

    def _hello(self, identity: bytes, body: dict[str, Any], key: str | None) -> None:
        known = self.registry.get(identity)
        if known is not None and known.key != key:  # one connection, one key
            raise ProtocolError(f"HELLO reusing agent {known.id}'s routing id with another key")
        claimed = body["agent"]
        try:  # ids are shown to people and may name files: a stranger's claim is checked
            check_name(claimed, "agent id")
        except BadIdentifier as exc:
            raise ProtocolError(f"HELLO: {exc}") from None
        # With keys the key admits the agent; its id is still the one it claims (one key may
        # serve several nodes), told apart from a live agent of that id by _identify.
        key_name = None
        if key is not None:
            assert self.security is not None
            key_name = self.security.name_of(key) or key[:16]
        session = body.get("session") or ""
        agent_id, previous = self._identify(identity, known, claimed, session, key)
        broken = body.get("broken")
        agent = AgentState(
            identity=identity,
            id=agent_id,
            key=key,
            key_name=key_name,
            session=session,
            broken=broken[:MAX_BROKEN_TEXT] if isinstance(broken, str) and broken else None,
            host=body["host"],
            slots=max(1, min(body["slots"], 4096)),
            prefetch=max(0, min(body["prefetch"], 4096)),
            caps=set(body["caps"]),
            missing=body.get("missing") if isinstance(body.get("missing"), dict) else {},
            held=set(body["held"]),
        )
        # a lease another agent holds is not this one's, whatever it says (unknown ones may be from
        # before a controller restart: their results will be dropped as stale)
        mine = {identity, previous.identity if previous is not None else identity}
        agent.held = {lease for lease in agent.held
                      if lease not in self.leases or self.leases[lease].agent in mine}
        if previous is not None:  # the same agent again: keep the leases it still holds, requeue the rest
            agent.done, agent.failed, agent.avg_job_s = previous.done, previous.failed, previous.avg_job_s
            self.registry.remove(previous.identity)
            for lease in [lease for lease in self.leases.values() if lease.agent == previous.identity]:
                if lease.id in agent.held:
                    lease.agent = identity
                else:
                    self._lose(lease, "agent reconnected without it")
        self.registry.add(agent)
        if agent.broken:
            log.warning("agent %s on %s is broken and takes no jobs: %s", agent.id, agent.host, agent.broken)
        elif previous is None or previous.broken:
            log.info("agent %s joined from %s with %d slots (%s)", agent.id, agent.host, agent.slots,
                     ", ".join(sorted(agent.caps)) or "no capabilities")
        self._send(identity, T.WELCOME, {"heartbeat": self.heartbeat, "liveness": self.liveness,
                                         "files": self.assets.endpoint, "agent": agent.id})

    def _identify(self, identity: bytes, known: AgentState | None, claimed: str, session: str,
                  key: str | None) -> tuple[str, AgentState | None]:
        """The id this HELLO's agent gets, and the registry entry it continues (if any).

        A HELLO on a known connection updates that agent; one that shows the secret session of
        a live agent is that agent reconnecting (it keeps the id it has here); anyone else claiming a live id
        (a second node started with the same --id, or an impostor) gets a free id of its own
        and none of the first one's routing or jobs.
        """
        if known is not None:
            return known.id, known
        again = self.registry.by_session(session)
        if again is not None and again.key == key:  # under the id it was given, if it was renamed
            return again.id, again
        live = self.registry.by_id(claimed)
        if live is None:
            return claimed, None
        agent_id = self.registry.free_id(claimed)
        log.warning("agent id %r is in use by a live agent on %s; the new agent is known as %r (give each "
                    "agent its own --id)", claimed, live.host, agent_id)
        return agent_id, None

    def _results(self, agent: AgentState, msg: Message) -> None:
        offset = 0
        for result in msg.body["results"]:
            files = msg.payloads[offset:offset + len(result["files"])]
            offset += len(result["files"])
            agent.held.discard(result["lease"])
            lease = self.leases.get(result["lease"])
            if lease is None or lease.agent != agent.identity or not lease.run.is_current(lease):
                self.stats["stale"] += 1
                log.info("dropping a result for lease %s from %s: not the current lease", result["lease"], agent.id)
                continue
            del self.leases[lease.id]
            agent.observe(float(result["duration"]))
            oversize = _oversize(result["files"], files, lease.run.project.max_output)
            if result["ok"] and oversize:
                agent.failed += 1
                lease.run.failed(lease, oversize, "")
            elif result["ok"]:
                self._collate(agent, lease, result, files)
            elif result.get("requeue"):
                lease.run.handed_back(lease, result.get("error") or "handed back")
            else:
                agent.failed += 1
                lease.run.failed(lease, result.get("error") or "failed", result.get("log") or "",
                                 retry=result.get("retry") is not False)

    def _collate(self, agent: AgentState, lease: Lease, result: dict[str, Any], files: list[bytes]) -> None:
        staging = self.state_dir / "staging" / lease.id if result["files"] or files else None
        try:
            outputs = _stage(staging, result["files"], files) if staging else {}
            lease.run.succeeded(lease, result["result"], outputs)
            agent.done += 1
            self.stats["collated"] += 1
        except Exception as exc:
            agent.failed += 1
            lease.run.failed(lease, f"collating its outputs failed: {type(exc).__name__}: {exc}", "")
        finally:
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _handle_client(self, identity: bytes, msg: Message) -> None:
        if msg.type is T.SUBMIT:
            self._submit(identity, msg.body)
        elif msg.type is T.FOLLOW:
            run = self.runs.get(msg.body["project"])
            if run is None:
                self._send(identity, T.ERROR, {"message": f"no project {msg.body['project'][:200]!r}"})
                return
            followers = self.followers.setdefault(run.id, set())
            if identity not in followers and len(followers) >= MAX_FOLLOWERS:
                self._send(identity, T.ERROR, {"message": f"project {run.id} has {MAX_FOLLOWERS} followers already"})
                return
            followers.add(identity)
            self._send_update(run)
        elif msg.type is T.STATUS:
            self._send_status(identity)
        elif msg.type is T.CANCEL_PROJECT:
            self._cancel(identity, msg.body["project"])

    def _send_status(self, identity: bytes) -> None:
        """Answer STATUS from a snapshot at most `STATUS_SNAPSHOT_S` old: a flood costs one send each."""
        now = time.monotonic()
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
        self._start_run(identity, wire["root"], wire.get("output"), priority, uploaded=False)

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
            self._send(identity, T.ERROR, {"message": f"project upload failed: {upload.error}"})
            return
        self._start_run(identity, str(folder), body["project"].get("output"), body["priority"], uploaded=True)

    def _start_run(self, identity: bytes, root: Any, output: Any, priority: int, *, uploaded: bool) -> None:
        """Read the project off the loop (`farm.controller.intake`); `_accept` starts it once read."""
        self.intake.read(identity, root, output, uploaded=uploaded,
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
        run = ProjectRun(run_id, project, media, self.journal, priority=priority)
        try:
            self._prepare(run, prepared.manifest)
        except (SyncError, OSError) as exc:
            self._send(identity, T.ERROR, {"message": f"{project.root}: {exc}"})
            return
        self.journal.add_project(run_id, {**project.to_wire(), "uploaded": uploaded}, priority, time.time())
        run.uploaded = uploaded
        self.runs[run_id] = run
        self.followers.setdefault(run_id, set()).add(identity)
        log.info("accepted project %s (%s, %s jobs, %d asset files)", run_id, media.name, run.total,
                 run.assets["files"])
        self._send(identity, T.ACCEPTED, {"project": run_id, "total": run.total})

    def _cancel(self, identity: bytes, ref: str) -> None:
        run = self.runs.get(ref) or next((r for r in self.runs.values() if r.project.name == ref and r.active), None)
        if run is None:
            self._send(identity, T.ERROR, {"message": f"no project {ref!r}"})
            return
        if not run.active:
            self._send(identity, T.ERROR, {"message": f"project {run.id} is already {run.state}"})
            return
        for lease in run.cancel():
            self.leases.pop(lease.id, None)
            self._send(lease.agent, T.CANCEL, {"leases": [lease.id]})
            agent = self.registry.get(lease.agent)
            if agent:
                agent.held.discard(lease.id)
        log.info("cancelled project %s", run.id)
        self.journal.finish_project(run.id, "cancelled", run.summary())
        self._send(identity, T.FINISHED, {"summary": run.summary()})
        self._notify_finished(run)

    # -- scheduling ------------------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        active = [r for r in self.runs.values() if r.active]
        if not active:
            return
        agents = list(self.registry)
        eligible = {}  # once per turn
        for run in active:
            eligible[run.id] = sum(1 for a in agents if run.eligible(a)) or run.lift_blocklist(agents)
        for agent in agents:
            free = agent.free()
            if free <= 0:
                continue
            leases: list[Lease] = []
            for run in sorted(active, key=lambda r: (-r.priority, len(r.leases))):
                if len(leases) >= free:
                    break
                if run.eligible(agent):
                    leases += run.take(agent, free - len(leases), eligible[run.id], now)
            if leases:
                self._send_jobs(agent, leases)

    def _send_jobs(self, agent: AgentState, leases: list[Lease]) -> None:
        projects = {}
        jobs = []
        for lease in leases:
            run = lease.run
            if run.id not in agent.known_projects:
                projects[run.id] = {**run.project.to_wire(), "assets": run.assets}
                agent.known_projects.add(run.id)
            jobs.append({"lease": lease.id, "key": lease.job.key, "project": run.id, "params": lease.job.params,
                         "deps": run.deps_for(lease.job), "timeout": run.timeout})
            self.leases[lease.id] = lease
            agent.held.add(lease.id)
        self.stats["dispatched"] += len(jobs)
        self.stats["max_held"] = max(self.stats["max_held"], len(agent.held))
        if not self._send(agent.identity, T.JOBS, {"jobs": jobs, "projects": projects}):
            self._drop_agent(agent, "unreachable")

    def _lose(self, lease: Lease, reason: str) -> None:
        self.leases.pop(lease.id, None)
        if lease.run.is_current(lease):
            lease.run.lost_lease(lease, reason)

    def _drop_agent(self, agent: AgentState, reason: str) -> None:
        if self.registry.get(agent.identity) is not agent:
            return
        self.registry.remove(agent.identity)
        lost = [lease for lease in self.leases.values() if lease.agent == agent.identity]
        for lease in lost:
            self._lose(lease, reason)
        # an agent that said goodbye holding nothing is no news; anything else is
        level = logging.INFO if reason == "agent left" and not lost else logging.WARNING
        log.log(level, "agent %s removed (%s); %d jobs requeued", agent.id, reason, len(lost))

    def _check_agents(self, now: float) -> None:
        for agent in self.registry.expired(now, self.heartbeat * self.liveness):
            self._drop_agent(agent, f"silent for {now - agent.last_seen:.1f}s")
        for agent in self.registry:
            if now - agent.last_sent >= self.heartbeat:
                self._send(agent.identity, T.HEARTBEAT)

    def _check_leases(self, now: float) -> None:
        self._check_stuck(now)
        # The agent enforces job timeouts; this backstop catches an agent that cannot.
        for lease in list(self.leases.values()):
            if now > lease.deadline + max(10.0, lease.run.timeout * 0.5):
                self.leases.pop(lease.id)
                self._send(lease.agent, T.CANCEL, {"leases": [lease.id]})
                agent = self.registry.get(lease.agent)
                if agent:
                    agent.held.discard(lease.id)
                if lease.run.is_current(lease):
                    lease.run.failed(lease, f"no result within its {lease.run.timeout:g}s timeout", "")

    def _check_finalizing(self) -> None:
        for run in self.runs.values():
            if run.active and run.all_in():
                run.state = "finalizing"
                self.finalizing[run.id] = self._executor.submit(run.finalize)
        for run_id, future in list(self.finalizing.items()):
            if future.done():
                del self.finalizing[run_id]
                run = self.runs[run_id]
                try:
                    run.finished(future.result(), None)
                except FarmError as exc:  # an expected failure the plugin explains: one line, no traceback
                    log.error("%s: finalize failed: %s", run_id, exc)
                    run.finished([], f"finalize failed: {exc}")
                except Exception as exc:  # a bug in the plugin: keep the traceback for its author
                    log.exception("%s: finalize failed", run_id)
                    run.finished([], f"finalize failed: {type(exc).__name__}: {exc}")
                log.info("project %s %s in %.1fs", run_id, run.state, run.elapsed())
                if run.uploaded:  # the submitter is elsewhere: let it download the outputs
                    run.download = self.assets.publish_outputs(f"{run.id}.output", run.project.output_dir)
                self.assets.unpublish(run.id)
                self.journal.finish_project(run.id, run.state, run.summary())
                self._notify_finished(run)
                self._prune()

    def _check_stuck(self, now: float) -> None:
        """Fail runs no agent can make progress on and none can come to (see `policy.cannot_arrive`)."""
        local = self.local_agents() if self.local_agents is not None else None
        for run in self.runs.values():
            reason = self.stalled(run)
            if reason is None:
                run.stuck_since = None
                continue
            run.stuck_since = run.stuck_since or now
            verdict = cannot_arrive(run, list(self.registry), reason, local)
            if verdict and now - run.stuck_since >= STUCK_GRACE_S:
                run.abort(verdict)

    def _prune(self) -> None:
        finished = [r for r in self.runs.values() if r.state in ("done", "failed", "cancelled")]
        for run in finished[:-KEEP_FINISHED_RUNS]:
            del self.runs[run.id]
            self.followers.pop(run.id, None)

    # -- reporting -------------------------------------------------------------------

    def stalled(self, run: ProjectRun) -> str | None:
        if not run.active or run.all_in():
            return None
        if run.leases:
            return None
        if not len(self.registry):
            return "no agents connected yet"
        if any(run.eligible(a) for a in self.registry):
            return None
        reasons = []
        for a in self.registry:
            if a.broken:
                reasons.append(f"{a.id}: broken: {a.broken}")
            elif a.id in run.blocklist:
                reasons.append(f"{a.id}: blocklisted ({run.blocklist[a.id]})")
            elif run.media.name not in a.caps:
                reasons.append(f"{a.id}: {a.missing.get(run.media.name, 'does not have this media type')}")
            else:
                needs = [r for r in run.media.requirements if r not in a.caps]
                reasons.append(f"{a.id}: lacks {', '.join(needs)}")
        return f"no connected agent can render {run.media.name!r} ({'; '.join(reasons)})"

    def _send_update(self, run: ProjectRun) -> None:
        snap = run.snapshot(self.stalled(run))
        for identity in list(self.followers.get(run.id, ())):
            if not self._send(identity, T.UPDATE, snap):
                self.followers[run.id].discard(identity)

    def _send_updates(self) -> None:
        for run in self.runs.values():
            if run.state in ("running", "finalizing") and self.followers.get(run.id):
                self._send_update(run)

    def _notify_finished(self, run: ProjectRun) -> None:
        summary = run.summary()
        for identity in self.followers.pop(run.id, set()):
            self._send(identity, T.FINISHED, {"summary": summary})

    def _current_jobs(self, agent: AgentState, limit: int = 20) -> list[str]:
        """What an agent holds now, as project/job keys (a few of them, for people)."""
        held = [self.leases[lease] for lease in list(agent.held)[:limit] if lease in self.leases]
        return sorted(f"{lease.run.project.name}/{lease.job.key}" for lease in held)

    def status(self) -> dict[str, Any]:
        """A snapshot for `farm status` (also read by tests from another thread: copies only)."""
        now = time.monotonic()
        return {
            "controller": self.url,
            "files": self.assets.endpoint,
            "agents": [{**a.describe(now), "current": self._current_jobs(a)} for a in self.registry],
            "projects": [r.snapshot(self.stalled(r)) for r in self.runs.values()],
            "stats": dict(self.stats),
        }


def _lock_state_dir(folder: Path) -> IO[bytes]:
    """Hold the state folder for this controller alone: two journals in one file would corrupt each other."""
    handle = open(folder / "controller.lock", "wb")  # noqa: SIM115 (held for the controller's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FarmError(f"another controller is using the state folder {folder}; "
                        "stop it, or give this one its own --state-dir") from None
    return handle


def _bind(sock: zmq.Socket, url: str) -> str:
    """Bind, resolving port 0 to a free port; returns the address clients should use."""
    if url.startswith("tcp://") and url.rsplit(":", 1)[-1] in ("0", "*"):
        host = url[len("tcp://"):].rsplit(":", 1)[0]
        port = sock.bind_to_random_port(f"tcp://{host}")
        return f"tcp://{'127.0.0.1' if host in ('*', '0.0.0.0') else host}:{port}"
    sock.bind(url)
    return url


def _stage(folder: Path, names: list[list[Any]], payloads: list[bytes]) -> dict[str, Path]:
    """Write a result's files to a staging folder, verified, refusing names that leave it."""
    if len(names) != len(payloads):
        raise ProtocolError(f"result lists {len(names)} files but carries {len(payloads)}")
    outputs: dict[str, Path] = {}
    for entry, data in zip(names, payloads, strict=True):
        if len(entry) != 3 or not isinstance(entry[0], str) or entry[1] != len(data):
            raise ProtocolError(f"bad file entry {str(entry)[:80]} (or size mismatch)")
        if blake3(data).digest() != entry[2]:
            raise ProtocolError(f"output {entry[0]!r} failed verification (its digest does not match)")
        try:
            rel = check_key(safe_relpath(entry[0]), "output name")
        except (UnsafePath, BadIdentifier) as exc:
            raise ProtocolError(str(exc)) from None
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        outputs[rel] = path
    return outputs


def _oversize(names: list[list[Any]], payloads: list[bytes], limit: int) -> str | None:
    """Why a result's outputs are over its job's limit, if they are (checked before staging)."""
    declared = sum(max(e[1], 0) for e in names if len(e) > 1 and isinstance(e[1], int))
    declared = max(declared, sum(map(len, payloads)))
    if declared <= limit:
        return None
    return (f"its outputs are {declared / 2**20:.1f} MiB, over the job's limit of {limit / 2**20:.1f} MiB "
            "([jobs] max_output_mib)")
