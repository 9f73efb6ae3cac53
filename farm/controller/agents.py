"""The controller's side of the agent link: HELLO and identities, results, progress, departures.

A mixin of `farm.controller.server.Controller` (the loop thread alone runs it). What a result
means for the schedule is `farm.controller.scheduler`'s to say; this moves and checks messages.
A departed agent (BYE, silence, a closed connection, a revoked key) takes its block server
registrations with it: the file service's tracker stops offering them at once.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from typing import Any

import zmq

from farm.controller.agentcounts import DepartedCounts
from farm.controller.registry import AgentState
from farm.controller.restarts import Restarts, node_token
from farm.controller.run import Lease, ProjectRun
from farm.controller.settling import check_durations, settle_results
from farm.controller.staging import oversize, stage
from farm.controller.versions import read_versions, skew
from farm.errors import ProtocolError
from farm.ids import BadIdentifier, check_name
from farm.join import shared_key
from farm.protocol import JobResult, Message, T, pack
from farm.words import counted

log = logging.getLogger(__name__)

AGENT_MESSAGES = {T.HELLO, T.RESULTS, T.PROGRESS, T.HEARTBEAT, T.BYE}
MAX_BROKEN_TEXT = 4000  # characters of a broken agent's error kept and shown
MAX_DEPARTED = 4096  # dropped agents whose block servers are offered again if the same process returns


class AgentSide:
    """Handlers for agents' messages; needs the controller's scheduler, events, _send and settings."""

    def _handle_agent(self, identity: bytes, msg: Message, key: str | None = None) -> None:
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
            results = msg.body["results"]
            check_durations(results)  # all before any is settled
            settle_results(self, agent, results, msg.payloads)  # the plain ones in groups
        elif msg.type is T.PROGRESS:
            lease = self.scheduler.lease_of(agent, msg.body["lease"])
            if lease is not None:
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
        node = node_token(body)
        broken = body.get("broken")
        plugins = read_versions(body.get("plugins"))  # all checked before _identify may drop a predecessor
        agent_id, previous = self._identify(identity, known, claimed, session, key, node, body["host"])
        agent = AgentState(
            identity=identity,
            id=agent_id,
            key=key,
            key_name=key_name,
            session=session,
            node=node,
            broken=broken[:MAX_BROKEN_TEXT] if isinstance(broken, str) and broken else None,
            host=body["host"],
            slots=max(1, min(body["slots"], 4096)),
            prefetch=max(0, min(body["prefetch"], 4096)),
            caps=set(body["caps"]),
            missing=body.get("missing") if isinstance(body.get("missing"), dict) else {},
            held=set(body["held"]),
            plugins=plugins,
        )
        agent.skew = skew(agent.id, plugins, agent.caps)
        for why in agent.skew.values():
            log.warning("%s: it gets none of that media type's jobs", why)
        self.scheduler.join(agent, previous)
        if previous is None:  # the same process back after it was dropped, or its node's next one
            self._departed_counts().returned(agent, self._restarts().shared)
        claims = self._claimed_ids()
        if previous is not None:
            claims.pop(previous.identity, None)
        claims[identity] = claimed
        self._restore_registrations(agent, claimed)
        if agent.broken:
            log.warning("agent %s on %s is broken and takes no jobs: %s", agent.id, agent.host, agent.broken)
            self.events.publish("agent.broken", None, None, agent.id, {"host": agent.host, "reason": agent.broken})
        elif previous is None or previous.broken:
            self.events.publish("agent.joined", None, None, agent.id,
                                {"host": agent.host, "slots": agent.slots, "capabilities": sorted(agent.caps)})
            log.info("agent %s joined from %s with %s (%s)", agent.id, agent.host,
                     counted(agent.slots, "slot"), ", ".join(sorted(agent.caps)) or "no capabilities")
        welcome = {"heartbeat": self.heartbeat, "liveness": self.liveness, "files": self.assets.endpoint,
                   "agent": agent.id}
        shared = shared_key(self.registry, agent)  # loudly, on both sides
        if shared is not None:
            log.warning("%s", shared)
            welcome["warning"] = shared
        self._send(identity, T.WELCOME, welcome)

    def _identify(self, identity: bytes, known: AgentState | None, claimed: str, session: str,
                  key: str | None, node: str, host: str) -> tuple[str, AgentState | None]:
        """The id this HELLO's agent gets, and the registry entry it continues (if any).

        A HELLO on a known connection updates that agent; one that shows the secret session of
        a live agent is that agent reconnecting (it keeps the id it has here); one that shows the
        node token of a live agent of its host and key is that node's next process, and the live one
        its dead predecessor, dropped first (`farm.controller.restarts`). Anyone else claiming a live
        id (a second node started with the same --id, or an impostor) gets a free id of its own and
        none of the first one's routing or jobs.
        """
        if known is not None:
            return known.id, known
        again = self.registry.by_session(session)
        if again is not None and again.key == key:  # under the id it was given, if it was renamed
            return again.id, again
        restarts = self._restarts()
        dead = restarts.predecessor(self.registry, self._claimed_ids(), claimed, session, node, key, host)
        if dead is not None:
            self._drop_agent(dead, "it restarted: its node's new process showed the node token")
            restarts.dropped(dead)
            if self.registry.by_id(claimed) is not None:  # it had been renamed, and the name's holder lives
                return dead.id, None
        live = self.registry.by_id(claimed)
        if live is None:
            return claimed, None
        agent_id = self.registry.free_id(claimed)
        log.warning("agent id %r is in use by a live agent on %s; the new agent is known as %r (give each "
                    "agent its own --id)", claimed, live.host, agent_id)
        return agent_id, None

    def _restarts(self) -> Restarts:
        """Node tokens' memory: predecessors dropped for a restart, tokens found shared."""
        found = getattr(self, "_restart_memory", None)
        if found is None:
            found = self._restart_memory = Restarts()
        return found

    def _result(self, agent: AgentState, r: list[Any], files: list[bytes], lease: Lease | None) -> None:
        """One result (a `farm.protocol.RESULT_ROW` array) settled by itself (`farm.controller.settling`
        settles the plain ones in groups); `lease`: its lease, settled already, None if it is not current."""
        result = JobResult.from_wire(r)
        if lease is None:
            self.health["stale"] += 1
            log.info("dropping a result for lease %s from %s: not the current lease", result.lease, agent.id)
            return
        if result.ok:  # a failure's duration says how fast it failed, not how long jobs take
            agent.observe(float(result.duration), lease.run.id)
        lease.result = result  # its log and duration, for the job's log (farm.controller.joblogs)
        too_big = None if not (result.files or files) else oversize(result.files, files,
                                                                    lease.run.project.max_output)
        if result.ok and too_big:
            agent.failed += 1
            lease.run.failed(lease, too_big, "")
        elif result.ok:
            self._collate(agent, lease, result, files)
        elif result.requeue:
            lease.run.handed_back(lease, result.error or "handed back")
        else:
            agent.failed += 1
            lease.run.failed(lease, result.error or "failed", result.log or "", retry=result.retry)

    def _collate(self, agent: AgentState, lease: Lease, result: JobResult, files: list[bytes]) -> None:
        """Stage a result's verified outputs for the collate thread (`farm.controller.collator`)."""
        staging = self.state_dir / "staging" / lease.id if result.files or files else None
        try:
            outputs = stage(staging, result.files, files) if staging else {}
        except Exception as exc:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if self._staging_failed(lease, exc):  # the state folder's disk: the run stops, no attempt
                return
            agent.failed += 1
            lease.run.failed(lease, f"collating its outputs failed: {type(exc).__name__}: {exc}", "")
            return
        lease.run.succeeded(lease, result.result, outputs, agent=agent, staging=staging)

    def _dispatch(self, now: float) -> None:
        """Send the scheduler's decisions: each agent its new jobs (and the projects it has not seen)."""
        for agent, leases in self.scheduler.dispatch(now):
            projects = {}
            jobs = []
            known = agent.known_projects
            last = None
            for lease in leases:
                run, job = lease.run, lease.job
                if run is not last:  # a turn's leases come a run at a time
                    last, run_id, timeout = run, run.id, run.timeout
                    if run_id not in known:
                        projects[run_id] = {**run.project.to_wire(), "assets": run.assets}
                        known.add(run_id)
                # a `JobSpec`'s fields in order (`farm.protocol.JOB_ROW`), made here: no two calls per
                # job (`tests/test_dispatch_lean.py`)
                jobs.append((lease.id, job.key, run_id, job.params, run.deps_for(job) if job.deps else {},
                             timeout))
            if not self._send(agent.identity, T.JOBS, {"jobs": jobs, "projects": projects}):
                self._drop_agent(agent, "unreachable")

    def _collates_stopped(self, run: ProjectRun) -> None:
        """The controller cannot write a run's outputs (`farm.controller.collator.settle` failed it):
        its jobs in flight are cancelled on their agents, none of them an attempt."""
        leases = self.scheduler.withdraw(run)
        for lease in leases:
            self._send(lease.agent, T.CANCEL, {"leases": [lease.id]})
        if leases:
            log.info("%s: withdrew %s in flight", run.id, counted(len(leases), "job"))

    def _drop_agent(self, agent: AgentState, reason: str) -> None:
        lost = self.scheduler.leave(agent, reason)
        if lost is None:
            return
        self._departed_counts().left(agent)  # its done and failed jobs count on if it comes back
        self._forget_registrations(agent)
        self.events.publish("agent.left", None, None, agent.id, {"reason": reason})
        # an agent that said goodbye holding nothing is no news; anything else is
        level = logging.INFO if reason == "agent left" and not lost else logging.WARNING
        log.log(level, "agent %s removed (%s); %s requeued", agent.id, reason, counted(lost, "job"))

    def _claimed_ids(self) -> dict[bytes, str]:
        """Routing id -> the id each registered agent claimed in its HELLO: the one it names to the
        tracker (`farm.filesync.tracker`), which differs from ours when a live agent had it."""
        found = getattr(self, "_claimed", None)
        if found is None:
            found = self._claimed = {}
        return found

    def _forget_registrations(self, agent: AgentState) -> None:
        """A dropped agent's block servers are offered to nobody from now on (not for the tracker's
        TTL): unless a live agent registers as the same key and id, i.e. a restarted process whose
        predecessor was declared dead only now; its registration replaced the predecessor's already."""
        claims = self._claimed_ids()
        claimed = claims.pop(agent.identity, agent.id)
        key = agent.key or ""
        if any(claims.get(a.identity) == claimed and (a.key or "") == key for a in self.registry):
            return
        if self.assets.server.tracker.forget_agent(key, claimed) and agent.session:
            departed = self._departed()
            departed[(key, claimed)] = agent.session
            while len(departed) > MAX_DEPARTED:
                del departed[next(iter(departed))]  # the oldest: its registrations expire first anyway

    def _restore_registrations(self, agent: AgentState, claimed: str) -> None:
        """The same process back (its secret session) after it was dropped, e.g. for a silence
        longer than its liveness: its block servers serve still, so they are offered again."""
        key = agent.key or ""
        session = self._departed().pop((key, claimed), None)
        if session is not None and session == agent.session:
            self.assets.server.tracker.restore_agent(key, claimed)

    def _departed_counts(self) -> DepartedCounts:
        """Done and failed counters of dropped agents, for their return (`farm.controller.agentcounts`)."""
        found = getattr(self, "_counts_departed", None)
        if found is None:
            found = self._counts_departed = DepartedCounts()
        return found

    def _departed(self) -> dict[tuple[str, str], str]:
        """(key, claimed id) -> session, of agents dropped with block server registrations (oldest first)."""
        found = getattr(self, "_departed_sessions", None)
        if found is None:
            found = self._departed_sessions = {}
        return found

    def _drop_revoked(self) -> int:
        """Cut off at once the agents whose key is no longer allowed (`farm keys revoke`); their jobs go
        back to the queue, and `farm status` lists them as refused. Returns how many."""
        if self.security is None:
            return 0
        revoked = [a for a in self.registry if a.key is not None and not self.security.allows(a.key)]
        for agent in revoked:
            if agent.held:  # stop its workers: whatever it sends now is refused unread
                self._send(agent.identity, T.CANCEL, {"leases": sorted(agent.held)})
            self._send(agent.identity, T.ERROR, {"code": "revoked", "message": (
                f"this agent's key {agent.key_name} was revoked here (`farm keys revoke`): it is cut off, "
                "its jobs go to other agents; to serve again, join with a new token (`farm keys invite`)")})
            self.registry.refuse(agent, f"key {agent.key_name} revoked")
            self._drop_agent(agent, f"its key {agent.key_name} was revoked")
        return len(revoked)

    def _check_agents(self, now: float) -> None:
        """Drop silent agents and heartbeat quiet ones: a pass over every agent, so at most
        every tenth of a heartbeat, not every loop turn (thousands a second with many agents)."""
        if now - self._agents_checked < self.heartbeat / 10:
            return
        self._agents_checked = now
        self._drop_revoked()
        self._drop_revoked_clients()
        # An overloaded loop has not read the heartbeats that wait in its socket yet: judge
        # silence more leniently then (twice the time), not never (a flood must not hide deaths).
        timeout = self.heartbeat * self.liveness * (2 if self.backlog else 1)
        for agent in self.registry.expired(now, timeout):
            self._drop_agent(agent, f"silent for {now - agent.last_seen:.1f}s")
        for agent in self.registry:
            if now - agent.last_sent >= self.heartbeat:
                self._send(agent.identity, T.HEARTBEAT)

    def _probe_agents(self) -> None:
        """After a connection closed: drop agents that are no longer routable (the event names no one)."""
        for agent in self.registry:
            try:
                self.sock.send_multipart([agent.identity, *pack(T.HEARTBEAT)], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    self._drop_agent(agent, "its connection closed")
