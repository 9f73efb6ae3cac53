"""The controller's event loop: one ROUTER socket for agents and submitting clients.

Single-threaded by design: every piece of scheduling state is touched by this loop
alone, so there are no locks. Only `collate` (one thread, `farm.controller.collator`) and
`finalize` (which may encode a video for minutes) run in helper threads, so heartbeats never
wait on them, and event observers run in theirs (`farm.controller.events`). The rooms: `scheduler` decides who runs what;
`agents` and `clients` handle each side's messages; `intake` reads submitted projects
off the loop; `listen` sets up the socket and the state folder; this module runs the loop
and moves messages.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from farm import gcpolicy, join, wireversion
from farm.controller import listen, peers, roles
from farm.controller.agents import AgentSide
from farm.controller.assets import AssetService
from farm.controller.clients import CLIENT_MESSAGES, ClientSide
from farm.controller.collator import DISK_CODE, Collator
from farm.controller.control import ControlSide
from farm.controller.diskfault import DiskSide
from farm.controller.events import EventBus, Stats, Subscribers
from farm.controller.finishing import FinishSide
from farm.controller.intake import DEFAULT_INTAKE_LIMITS, IntakeLimits, IntakeQueue
from farm.controller.jobcache import JobCache
from farm.controller.joblogstore import JobLogStore, open_beside
from farm.controller.outputfolder import REMOVED_CODE, not_resumable
from farm.controller.registry import Registry
from farm.controller.run import Lease, ProjectRun
from farm.controller.scheduler import Scheduler
from farm.controller.units import ProgressGate
from farm.errors import FarmError, ProtocolError
from farm.filesync import SyncError
from farm.journal import Journal, JournalError
from farm.lowfds import LoopErrors
from farm.notify import Notifier
from farm.plugins import event_observer, get_media_type
from farm.preview import RunFacts
from farm.project import load_project
from farm.protocol import Message, T, pack, unpack
from farm.security import ServerSecurity, authenticated_id
from farm.words import counted

if TYPE_CHECKING:
    from farm.http.server import HttpServer

log = logging.getLogger(__name__)

UPDATE_EVERY_S = 0.2
LEASE_CHECK_EVERY_S = 1.0
JOURNAL_FILE = "journal.sqlite"


class Controller(AgentSide, ClientSide, ControlSide, FinishSide, DiskSide):
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
        scheduler: Scheduler | None = None,
        notify: Iterable[str] = (),
        notify_allow: Iterable[str] = (),
        http: HttpServer | None = None,
        files_port: int | None = None,
    ) -> None:
        """`notify`: webhooks for every run; `notify_allow`: hosts (or "*") whose project webhooks
        (``[notify]`` in farm.toml) are sent (`farm.notify`); others raise `farm.notify.BadWebhook`."""
        self.bind = bind
        self.http = http  # the HTTP API (farm.http), served in a thread of its own beside the loop
        # in-process clients (the HTTP API) connect here: no keys, as no other process can reach it
        self.local_url = f"inproc://farm-controller-{uuid.uuid4().hex}"
        self.files_port = files_port  # None: the job port + 1 (farm.endpoints.files_bind)
        self.intake_limits = intake_limits
        self.state_dir = Path(state_dir).absolute()  # uploads and staging are named by absolute paths
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.security = security
        self.url: str | None = None
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self.followers: dict[str, set[bytes]] = {}
        self.client_keys: dict[bytes, str] = {}  # with keys: the key each client proved (to cut off)
        self.publishing: dict[str, list[tuple[bytes, bool]]] = {}  # cancelled run -> who awaits its outputs
        self.finalizing: dict[str, concurrent.futures.Future[list[str]]] = {}
        self.budgets = peers.PeerBudgets()
        self._agents_checked = float("-inf")  # when liveness was last checked (`_check_agents`)
        self.backlog = False  # the last turn left messages unread (their heartbeats among them)
        self._deferred = peers.Deferred()  # read past their sender's budget: for the next turn (`_take`)
        self._status: tuple[float, list[bytes]] | None = None  # (when, packed STATUS_REPLY)
        # the loop's own health; what happened to jobs is counted by watching the event stream
        self.health = {"stale": 0, "bad_messages": 0, "handler_errors": 0, "loop_errors": 0}
        self.loop_errors = LoopErrors(log, self.health)
        self.events = EventBus(hook=event_observer())
        self._counts = Stats()
        self.events.count(self._counts.add)
        self.subscribers = Subscribers(self.events)
        self.progress_gate = ProgressGate()  # `progress` events only when a run's snapshot changed
        self.notifier = Notifier(notify, notify_allow, project_hooks=self._project_hooks)
        self.joblog_store: JobLogStore | None = None  # opened by `run`, beside the journal
        self.events.observe(self.notifier, Notifier.EVENT_TYPES)
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
        if self.http is not None:
            self.http.attach(self)  # its metrics count from the first event
        self._thread = threading.Thread(target=self._run_guarded, name="farm-controller", daemon=True)
        self._thread.start()
        self._bound.wait(30)
        if self._error:
            raise self._error
        if self.http is not None:
            try:
                self.http.start(self)
            except BaseException:
                self.stop()
                raise
        return self

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self._error = exc
            started = self._bound.is_set()
            self._bound.set()
            if started or not isinstance(exc, FarmError):  # a start-up error is the caller's to report
                log.exception("controller loop crashed")

    def stop(self, timeout: float = 10.0, *, shutdown_agents: bool = False) -> None:
        """Stop the loop; with shutdown_agents, tell connected agents to exit too (embedded runs)."""
        if self.http is not None:
            self.http.stop()  # before the loop: its requests need the loop to answer
        self._shutdown_agents = shutdown_agents
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._executor.shutdown(wait=True, cancel_futures=False)
        if self._thread is not None:  # a loop that waited for a finalize journals it, then ends
            self._thread.join(timeout)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: jobs dispatched, collated (by agents), reused, failed, retried; the loop's health."""
        return {**self._counts.counts, **self.health, "max_held": self.scheduler.max_held}

    @property
    def registry(self) -> Registry:
        return self.scheduler.registry

    @property
    def runs(self) -> dict[str, ProjectRun]:
        return self.scheduler.runs

    def run_facts(self, run: str) -> RunFacts | None:
        """A run's immutable facts (media type, settings, output folder), for any thread.

        ``run``: a run id or a project name (its newest run), one that finished before this start too.
        """
        found = self.runs.get(run)  # single reads and copies of the dict: atomic, whatever the loop does
        if found is None:
            named = [r for r in list(self.runs.values()) if r.project.name == run]
            found = max(named, key=lambda r: r.submitted, default=None)
        return self.finished_facts(run) if found is None else found.facts

    @property
    def leases(self) -> dict[str, Lease]:
        """Lease id -> lease, across runs (the scheduler's; read-only outside the loop)."""
        return self.scheduler.leases

    def _project_hooks(self, run_id: str) -> tuple[str, ...]:
        run = self.runs.get(run_id)  # from the event thread: a dict read, and a frozen Project
        return run.project.notify if run is not None else ()

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
        lock = listen.claim_state_dir(self.state_dir)
        self.sock = listen.router_socket(self.security)
        self.journal = Journal(self.state_dir / JOURNAL_FILE, background=True)
        try:
            self.url = listen.bind(self.sock, self.bind)
            self.sock.bind(self.local_url)
        except zmq.ZMQError as exc:
            self.sock.close(linger=0)
            self.journal.close()
            lock.close()
            raise FarmError(f"cannot listen on {self.bind}: {exc}") from None
        try:
            self.assets = AssetService(self.bind if self.bind.startswith("tcp://") else self.url, self.state_dir,
                                       self.security, self.files_port)
        except FarmError as exc:
            self.sock.close(linger=0)
            self.journal.close()
            lock.close()
            raise FarmError(f"{exc} (the file service listens on the job port + 1 unless --files-port)") from None
        self.uploads: dict[str, tuple[bytes, dict[str, Any], Path]] = {}  # token -> (client, SUBMIT, folder)
        self.intake = IntakeQueue(self.assets.hashes, self.intake_limits)
        self.cache = JobCache(self.state_dir / "cache", self.journal)
        self.collator = Collator(stopped=self._collates_stopped)
        self.joblog_store = open_beside(self.journal.path)  # job logs on disk beside the journal (closed below)
        self.events.start()
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
        poller.register(self.collator.wake, zmq.POLLIN)
        quiet = zmq.Poller()  # the monitor alone, while a flood is being paced
        quiet.register(monitor, zmq.POLLIN)
        gcpolicy.loop_started()  # young collections far apart while jobs fly (farm.gcpolicy)
        try:
            while not self._stop.is_set():
                due = self.journal.flush_due_in()
                wait_ms = self.collator.before_poll(50 if due is None else min(50, max(1, int(due * 1000))))
                if self.budgets.flooded():  # mostly dropped last turn: let the others run a moment first
                    events = dict(quiet.poll(min(wait_ms, peers.FLOOD_PAUSE_MS)))
                    events[self.sock] = zmq.POLLIN
                else:
                    events = dict(poller.poll(wait_ms))
                if events.get(self.sock) or self._deferred:
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
                if self.joblog_store is not None:  # the job logs of this turn to their writer, in one piece
                    self.joblog_store.push()
                for upload in self.assets.finished_uploads():
                    self._fenced(upload.token.encode(), self._uploaded, upload)
                for intake in self.intake.finished():
                    self._fenced(intake.identity, self._intake_done, intake)
                try:  # a state a peer provoked must not end the loop either (the journal failing does)
                    self.journal.tick(now)
                    self.collator.deliver()
                    self._dispatch(now)
                    self.collator.flush(time.monotonic())  # results and reuses, a batch at a time
                    self._check_agents(now)
                    if now - last_lease_check >= LEASE_CHECK_EVERY_S:
                        last_lease_check = now
                        self._check_leases(now)
                    self._check_finalizing()
                    if now - last_updates >= UPDATE_EVERY_S:
                        last_updates = now
                        self._send_updates()
                    self.subscribers.send(self._send)
                except JournalError as exc:
                    if not self._journal_fault(exc):  # the controller's own disk stops runs, not the loop
                        raise
                except Exception as exc:  # tracebacks for the first ones; out of descriptors: a line a minute
                    self.loop_errors.note(exc)
        finally:
            try:  # the journal must say how a finalize under way ended: the next start would run it again
                self._check_finalizing(stopping=True)
            except Exception:
                log.exception("could not record the finalizes under way")
            if self._shutdown_agents:
                for agent in self.registry:
                    self._send(agent.identity, T.SHUTDOWN)
            self.sock.disable_monitor()
            monitor.close(linger=0)
            self.collator.close()
            self.sock.close(linger=500 if self._shutdown_agents else 0)
            self.intake.close()
            self.assets.close()
            if self.joblog_store is not None:
                self.joblog_store.close()
            self._close_journal()
            self.events.stop()
            self.notifier.close()
            lock.close()
            gcpolicy.loop_ended()

    def _resume(self) -> None:
        """Take up the projects a previous incarnation left unfinished (after a crash or kill)."""
        for record in self.journal.unfinished_projects():
            wire = record.wire
            try:
                project = load_project(wire["root"], output=wire.get("output"), renderer_checks=False,
                                       facts=wire.get("facts"))
                media = get_media_type(project.media_type)
            except (FarmError, KeyError, TypeError) as exc:
                log.error("cannot resume project %s: %s", record.project_id, exc)
                self.journal.finish_project(record.project_id, "failed", {"error": f"cannot resume: {exc}"})
                continue
            run = self._new_run(record.project_id, project, media, record.priority)
            run.elapsed_before = max(0.0, time.time() - record.submitted_at)
            if (gone := not_resumable(run, self.journal)) is not None:  # its outputs so far went with it
                log.warning("project %s: %s", run.id, gone)
                run.served = {**run.served, "code": REMOVED_CODE}
                run.finished([], gone)
                self.journal.finish_project(run.id, run.state, run.summary())
                continue
            try:
                self._prepare(run)
            except SyncError as exc:
                run.finished([], f"cannot publish its assets: {exc}")
                self.journal.finish_project(run.id, run.state, run.summary())
                continue
            run.uploaded = bool(wire.get("uploaded"))
            self.scheduler.add(run)
            self._announce(run, resumed=True)
            log.info("resumed project %s: %s already done", run.id, counted(run.done, "job"))
        self.restore_controls()

    def _prepare(self, run: ProjectRun, manifest: Any = None) -> None:
        run.handoff = self.collator.submit  # its collates run in the collate thread
        super()._prepare(run, manifest)

    # -- messages ------------------------------------------------------------------

    def _drain(self) -> None:
        """Read and handle a bounded number of messages, each peer within its budget (`farm.controller.peers`)."""
        secured = self.security is not None
        budgets = self.budgets
        budgets.new_turn()
        now = time.monotonic()
        self.backlog = True  # until the socket is found empty: messages wait unread
        for item in self._deferred.take():  # read last turn past their sender's budget: first in line now
            self._read_fenced(item[0], self._take, *item, now)
        for _ in range(peers.PER_TURN):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=not secured)
            except zmq.Again:
                self.backlog = False
                return
            self._read_fenced(frames[0], self._read, frames, secured, now)

    def _read(self, frames: list[Any], secured: bool, now: float) -> None:
        """One message off the socket: whose it is (with keys: the key it proved), then `_take`."""
        key = joining = None
        if secured:
            assert self.security is not None
            key = authenticated_id(frames[0])  # who the peer proved to be, not who it says it is
            local = key is None and listen.in_process(frames[0])
            frames = [f.bytes for f in frames]
            joining = None if local else self.security.joining(key)  # proved a join token: JOIN only
            if joining is None and not local and not self.security.allows(key):
                self._bad(frames[0], "its key is not (or no longer) allowed")
                return
        identity, *rest = frames
        self._take(identity, rest, key, joining, now)

    def _read_fenced(self, identity: Any, read: Any, *args: Any) -> None:
        """Read one message: what escapes (a bug in reading or in a fence) drops that message, the
        loop goes on (an escape once ended the controller, and left the rest of the turn unread)."""
        try:
            read(*args)
        except Exception:
            self.health["handler_errors"] += 1
            raw = identity if isinstance(identity, bytes) else getattr(identity, "bytes", b"?")
            agent = self.registry.get(raw)
            log.exception("reading a message from %s failed; dropped it",
                          f"agent {agent.id}" if agent is not None else repr(raw[:32]))

    def _take(self, identity: bytes, rest: list[bytes], key: str | None, joining: str | None,
              now: float) -> None:
        """Handle one message read off the socket, within its sender's budget for this turn."""
        if not self.budgets.admit(identity, self.registry.get(identity) is not None, now):
            # A client answered at once may ask again within the same turn: past its budget its
            # message waits for the next turn (boundedly), not dropped; an ignored peer's is dropped.
            if not self.budgets.ignoring(identity, now):
                self._deferred.add(identity, (identity, rest, key, joining))  # within the peer's share
            return
        try:
            msg = unpack(rest)
        except ProtocolError as exc:
            if not wireversion.refuse(self, identity, rest, key):  # another version: told which, not dropped
                self._bad(identity, str(exc))
                self._refuse_malformed(identity, rest, exc)
            return
        if joining is not None:
            assert self.security is not None
            self._fenced(identity, self._enrol, identity, joining, msg)
            return
        self._fenced(identity, self._handle, identity, msg, key)

    def _handle(self, identity: bytes, msg: Message, key: str | None) -> None:
        if roles.refused(self, identity, msg.type, key):  # a node's key may not steer, a client's not serve
            return
        if msg.type in CLIENT_MESSAGES:
            self._handle_client(identity, msg, key)
        else:
            self._handle_agent(identity, msg, key)

    def _fenced(self, identity: bytes, handler: Any, *args: Any) -> None:
        """Run one handler; whatever it raises is answered and logged, and the loop goes on."""
        try:
            handler(*args)
        except ProtocolError as exc:
            self._bad(identity, str(exc))
        except Exception as exc:
            if isinstance(exc, JournalError) and self._journal_fault(exc):  # its disk: runs stopped, said why
                self._send(identity, T.ERROR, {"message": self.disk_fault, "code": DISK_CODE})
                return
            self.health["handler_errors"] += 1
            log.exception("handling a message from %r failed", identity[:32])
            self._send(identity, T.ERROR, {"message": f"the controller could not handle that message: "
                                                      f"{type(exc).__name__}: {str(exc)[:500]}"})

    def _bad(self, identity: bytes, why: str) -> None:
        self.health["bad_messages"] += 1
        count = self.budgets.strike(identity)
        if count < peers.BAD_BEFORE_IGNORING:
            log.warning("dropping bad message from %r: %s", identity[:32], why)
        elif count == peers.BAD_BEFORE_IGNORING:
            log.warning("%r keeps sending bad messages; ignoring it for %gs", identity[:32], peers.IGNORE_FOR_S)
            agent = self.registry.get(identity)
            if agent is not None:
                self._drop_agent(agent, "sent too many bad messages")

    def _enrol(self, identity: bytes, token_id: str, msg: Message) -> None:
        """Answer a peer that proved a join token (farm.join): its only business here."""
        assert self.security is not None
        try:
            self.sock.send_multipart([identity, *join.answer(self.security.tokens, token_id, msg)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("cannot answer %r: %s", identity[:32], exc)

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

    # -- scheduling ------------------------------------------------------------------

    def _check_leases(self, now: float) -> None:
        local = self.local_agents() if self.local_agents is not None else None
        self.scheduler.abort_stuck(now, local)
        for lease in self.scheduler.expired(now):
            self._send(lease.agent, T.CANCEL, {"leases": [lease.id]})
