"""Which jobs go to which agents, and what becomes of a lease: decisions, no sockets.

The scheduler owns the connected agents (`Registry`), the runs, and every lease: the
lease table (lease id -> `Lease`), each run's current lease per job, and each agent's
held set change together, here and nowhere else. Its methods return decisions (leases to
send, leases to withdraw); the server only moves messages. Run order: higher priority
first, then the run with fewer jobs in flight (fairness between equal priorities). An
agent gets at most its capacity (`AgentState.capacity`: slots plus a short prefetch).
Live control (`farm.controller.control`): a paused run and a draining agent get nothing new.
Blame, blocklists and where a retried job goes are `farm.controller.policy`'s rules.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Iterable

from farm.controller.policy import STUCK_GRACE_S, cannot_arrive
from farm.controller.registry import AgentState, Registry
from farm.controller.run import Lease, ProjectRun

log = logging.getLogger(__name__)

EXPIRY_GRACE_S = 10.0  # past its deadline a lease is withdrawn only after max(this, half its timeout)
RESCAN_EVERY_S = 0.5  # a dispatch turn looks at every agent this often; else only at the hungry ones
_lease_id = operator.attrgetter("id")


class Scheduler:
    """Runs, agents and leases; `dispatch` says who gets what, the other methods record what happened."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        self.runs: dict[str, ProjectRun] = {}
        self.leases: dict[str, Lease] = {}  # lease id -> lease, across runs
        self.max_held = 0  # the most leases one agent held at once (a check on capacity)
        self.last_rescan = float("-inf")
        self.looked_at = 0  # agents a dispatch turn examined, summed (a check on its cost)
        # run id -> ((registry version, blocklist size), how many agents may run its jobs)
        self._eligible: dict[str, tuple[tuple[int, int], int]] = {}

    # -- decisions ------------------------------------------------------------------

    def dispatch(self, now: float) -> list[tuple[AgentState, list[Lease]]]:
        """Lease jobs to agents with free capacity; returns each agent's new leases (to send).

        A turn costs O(agents that may have room), not O(agents): it returns at once when no run
        has a job to hand out, and looks at the registry's hungry agents; every `RESCAN_EVERY_S`
        it looks at all of them (a capacity that grew without a lease ending). A paused run and a
        draining agent get nothing new.
        """
        active = [r for r in self.runs.values() if r.active and not r.paused and (r.ready or not r.exhausted)]
        if not active:
            return []
        registry = self.registry
        if now - self.last_rescan >= RESCAN_EVERY_S:
            self.last_rescan = now
            registry.hungry = dict(registry.agents)
            self._eligible = {k: v for k, v in self._eligible.items() if k in self.runs}
        eligible = {run.id: self._eligible_count(run) for run in active}  # lifts a blocklist that leaves none
        decisions = []
        draining = registry.draining
        for agent in list(registry.hungry.values()):
            self.looked_at += 1
            if agent.avg_run is not None and agent.avg_run not in eligible:
                agent.forget_times()
            free = agent.free()
            if free <= 0 or agent.id in draining:
                del registry.hungry[agent.identity]  # back when a lease of it ends
                continue
            leases: list[Lease] = []
            for run in sorted(active, key=lambda r: (-r.priority, len(r.leases))):  # fair as leases grow
                if len(leases) >= free:
                    break
                if run.eligible(agent):
                    leases += run.take(agent, free - len(leases), eligible[run.id], now)
            if leases:
                ids = list(map(_lease_id, leases))
                self.leases.update(zip(ids, leases))
                agent.held.update(ids)
                self.max_held = max(self.max_held, len(agent.held))
                decisions.append((agent, leases))
                if len(leases) >= free:
                    del registry.hungry[agent.identity]
        return decisions

    def _eligible_count(self, run: ProjectRun) -> int:
        """How many connected agents may run this run's jobs (blocklist lifted if none); cached
        until an agent comes, goes, drains or undrains (`Registry.version`) or the run's blocklist changes."""
        key = (self.registry.version, len(run.blocklist))
        known = self._eligible.get(run.id)
        if known is not None and known[0] == key:
            return known[1]
        agents = self.taking()
        count = sum(1 for a in agents if run.eligible(a)) or run.lift_blocklist(agents)
        self._eligible[run.id] = ((self.registry.version, len(run.blocklist)), count)
        return count

    def expired(self, now: float) -> list[Lease]:
        """Withdraw leases long past their deadline (a backstop: agents enforce timeouts); returns them."""
        gone = []
        for lease in list(self.leases.values()):
            if now > lease.deadline + max(EXPIRY_GRACE_S, lease.run.timeout * 0.5):
                self._withdraw(lease)
                gone.append(lease)
                if lease.run.is_current(lease):
                    lease.run.failed(lease, f"no result within its {lease.run.timeout:g}s timeout", "")
        return gone

    def abort_stuck(self, now: float, local: list[int | None] | None) -> None:
        """Fail runs no agent can make progress on and none can come to (see `policy.cannot_arrive`)."""
        for run in self.runs.values():
            reason = self.stalled(run)
            if reason is None:
                run.stuck_since = None
                continue
            if run.stuck_since is None:
                run.stuck_since = now
            verdict = cannot_arrive(run, list(self.registry), reason, local)
            if verdict and now - run.stuck_since >= STUCK_GRACE_S and not self._drained_for(run):
                run.abort(verdict)

    def stalled(self, run: ProjectRun) -> str | None:
        """Why no connected agent can run this run's jobs, or None while one can (or none are left)."""
        if not run.active or run.paused or run.all_in() or run.leases or run.collating:
            return None
        if not len(self.registry):
            left, at = self.registry.left, self.registry.left_at
            if left and at is not None:  # not "yet": some came and went
                since = time.strftime("%H:%M", time.localtime(at))
                return f"no agents connected ({len(left)} left, the last at {since})"
            return "no agents connected yet"
        if any(run.eligible(a) for a in self.taking()):
            return None
        reasons = []
        for a in self.registry:
            if a.id in self.registry.draining:
                reasons.append(f"{a.id}: draining")
            elif a.broken:
                reasons.append(f"{a.id}: broken: {a.broken}")
            elif a.id in run.blocklist:
                reasons.append(f"{a.id}: blocklisted ({run.blocklist[a.id]})")
            elif run.media.name in a.skew:
                reasons.append(a.skew[run.media.name])
            elif run.media.name not in a.caps:
                reasons.append(f"{a.id}: {a.missing.get(run.media.name, 'does not have this media type')}")
            else:
                needs = [r for r in run.media.requirements if r not in a.caps]
                reasons.append(f"{a.id}: lacks {', '.join(needs)}")
        return f"no connected agent can render {run.media.name!r} ({'; '.join(reasons)})"

    def skipped(self, run: ProjectRun) -> list[str]:
        """Why connected agents that have this run's media type get none of its jobs (another
        version of its plugin), for the run's progress; empty when none do."""
        if not run.active:
            return []
        return [a.skew[run.media.name] for a in self.registry if run.media.name in a.skew]

    def describe(self, run: ProjectRun) -> dict:
        """The run's snapshot for people: why it waits (`stalled`, "paused" while paused), which agents
        it skips (`skipped`). STATUS, UPDATE, the QUERY and the HTTP API all say it from here."""
        stalled = "paused" if run.paused and run.active else self.stalled(run)  # not in stalled(): no abort
        return {**run.snapshot(stalled), "skipped": self.skipped(run)}

    # -- what happened --------------------------------------------------------------

    def settle(self, agent: AgentState, lease_id: str) -> Lease | None:
        """A result came for `lease_id` from `agent`: the lease, if it is the job's current one."""
        self.answered(agent, (lease_id,))
        return self.current(agent, lease_id)

    def answered(self, agent: AgentState, lease_ids: Iterable[str]) -> None:
        """Results came from `agent` for these leases (a RESULTS message's): it holds none of them any
        more, whether or not they are current; settle each with `current`."""
        agent.held.difference_update(lease_ids)
        self.registry.wake(agent)

    def current(self, agent: AgentState, lease_id: str) -> Lease | None:
        """The lease `lease_id`, out of the table, if it is its job's current lease and `agent`'s;
        None (a stale result) otherwise."""
        lease = self.leases.get(lease_id)
        if lease is None or lease.agent != agent.identity or not lease.run.is_current(lease):
            return None
        del self.leases[lease_id]
        return lease

    def lease_of(self, agent: AgentState, lease_id: str) -> Lease | None:
        """The lease `agent` holds under this id, if any (for progress reports)."""
        lease = self.leases.get(lease_id)
        return lease if lease is not None and lease.agent == agent.identity else None

    def join(self, agent: AgentState, previous: AgentState | None) -> None:
        """Register an agent (a HELLO); `previous` is the entry it continues (a reconnect), if any.

        A lease another agent holds is not this one's, whatever it says (unknown ones may be
        from before a controller restart: their results will be dropped as stale). A reconnect
        keeps the leases it still holds; the others are run again elsewhere.
        """
        mine = {agent.identity, previous.identity if previous is not None else agent.identity}
        agent.held = {lease for lease in agent.held
                      if lease not in self.leases or self.leases[lease].agent in mine}
        if previous is not None:
            agent.done, agent.failed, agent.avg_job_s = previous.done, previous.failed, previous.avg_job_s
            agent.avg_run, agent.last_job_s = previous.avg_run, previous.last_job_s
            self.registry.remove(previous.identity)
            for lease in [lease for lease in self.leases.values() if lease.agent == previous.identity]:
                if lease.id in agent.held:
                    lease.agent = agent.identity
                else:
                    self._lose(lease, "agent reconnected without it")
        self.registry.add(agent)

    def leave(self, agent: AgentState, reason: str) -> int | None:
        """Forget an agent and run its jobs again elsewhere; how many, or None if it was gone already."""
        if self.registry.get(agent.identity) is not agent:
            return None
        self.registry.remove(agent.identity)
        lost = [lease for lease in self.leases.values() if lease.agent == agent.identity]
        for lease in lost:
            self._lose(lease, reason)
        return len(lost)

    def cancel(self, run: ProjectRun) -> list[Lease]:
        """Cancel a run; returns its leases in flight (to withdraw from their agents)."""
        leases = run.cancel()
        for lease in leases:
            self._withdraw(lease)
        return leases

    def withdraw(self, run: ProjectRun) -> list[Lease]:
        """Take back a stopped run's leases in flight, at no attempt; returns them (to cancel on agents)."""
        leases = list(run.leases.values())
        run.leases.clear()
        run.progress.clear()
        for lease in leases:
            self._withdraw(lease)
        return leases

    def taking(self) -> list[AgentState]:
        """The connected agents that take new jobs: all but the draining ones."""
        draining = self.registry.draining
        return [a for a in self.registry if a.id not in draining] if draining else list(self.registry)

    def _drained_for(self, run: ProjectRun) -> bool:
        """A draining agent could run it: the run waits for an undrain rather than failing."""
        draining = self.registry.draining
        return any(a.id in draining and run.eligible(a) for a in self.registry)

    def agent_state(self, agent: AgentState) -> str:
        """For people: broken, draining, blocklisted (in any running run), else active."""
        if agent.broken:
            return "broken"
        if agent.id in self.registry.draining:
            return "draining"
        if any(agent.id in run.blocklist for run in self.runs.values() if run.active):
            return "blocklisted"
        return "active"

    def add(self, run: ProjectRun) -> None:
        self.runs[run.id] = run

    def current_jobs(self, agent: AgentState, limit: int = 20) -> list[str]:
        """What an agent holds now, as project/job keys (a few of them, for people)."""
        held = [self.leases[lease] for lease in list(agent.held)[:limit] if lease in self.leases]
        return sorted(f"{lease.run.project.name}/{lease.job.key}" for lease in held)

    def _withdraw(self, lease: Lease) -> None:
        self.leases.pop(lease.id, None)
        agent = self.registry.get(lease.agent)
        if agent:
            agent.held.discard(lease.id)
            self.registry.wake(agent)

    def _lose(self, lease: Lease, reason: str) -> None:
        self.leases.pop(lease.id, None)
        if lease.run.is_current(lease):
            lease.run.lost_lease(lease, reason)
