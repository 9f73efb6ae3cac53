"""Whose fault a job that did not come back is, and which agents a run stops using.

The rules (also in docs/architecture.md, "Retries and blocklisting"):

- A failure is the job's until shown otherwise. It counts against the agent (a *strike*) only
  when the same job later succeeds on another agent. A job that fails on every agent it ran on
  fails for good after ``max_attempts`` and costs no agent anything, so one bad input never
  takes an agent away from the rest of a project.
- A hand-back (the agent returns a job it did not start) counts against the agent that made
  it: one that hands back more than ``HANDBACK_ALLOWANCE`` jobs beyond those it completed in
  the run is blocklisted. Honest hand-backs are rare and come with completions (the jobs queued
  behind one that crashed its worker); a node that hands back everything is sabotage or broken.
- An agent with ``BLOCKLIST_AFTER`` strikes in a run gets no more of that run's jobs.
- A job is not given again to an agent it failed on, was lost with or was handed back by, while
  an eligible agent that has not had it exists.
- A run nobody can make progress on fails with the reason instead of waiting forever when no
  agent able to run it can come: every able agent is broken, or the farm is closed (the embedded
  one: its local agents are all here, or all gone). An open farm waits for agents to join.
- A job that an agent hands back because the node lacks a resource for the run (its cache is
  smaller than the project's files, its disk is full: the agent's reason carries `NODE_FAULT`) is
  the node's fault, not the job's: it costs the job no attempt, and the agent gets no more of that
  run's jobs at once (*unable*, with the reason). A run whose every able agent is broken or unable
  fails with the reasons (after `STUCK_GRACE_S`, unless a draining agent could run it).
- A blocklist never leaves a run without an agent: when every connected agent able to run it is
  blocklisted, the blocklist is lifted for them, with a warning (see `ProjectRun.lift_blocklist`);
  never for an unable agent, which would only fail the same way again.

Pure bookkeeping, no sockets: the scheduler's tests drive it directly.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from farm.words import counted

if TYPE_CHECKING:
    from farm.controller.registry import AgentState
    from farm.controller.run import ProjectRun

STUCK_GRACE_S = 2.0  # how long a run may have no agent able to run it before it fails (see cannot_arrive)
BLOCKLIST_AFTER = 3  # strikes (failures of jobs that then succeeded elsewhere) within one run
HANDBACK_ALLOWANCE = 16  # hand-backs beyond the jobs it completed, within one run
NODE_FAULT = "this node lacks the resources for this run: "  # starts an agent's hand-back reason


def node_fault(reason: str | None) -> str | None:
    """The node's own shortfall named in a hand-back ``reason`` (after `NODE_FAULT`), or None."""
    if not reason or NODE_FAULT not in reason:
        return None
    return reason.split(NODE_FAULT, 1)[1][:1000] or "unknown"


@dataclass
class Conduct:
    """One run's record of its agents: strikes, hand-backs, and where each job should not go."""

    strikes_limit: int = BLOCKLIST_AFTER
    handback_allowance: int = HANDBACK_ALLOWANCE
    blocklist: dict[str, str] = field(default_factory=dict)  # agent id -> why
    unable: dict[str, str] = field(default_factory=dict)  # agent id -> what it lacks (also blocklisted)
    failed_on: dict[str, set[str]] = field(default_factory=dict)  # job key -> agents it failed on
    avoid: dict[str, set[str]] = field(default_factory=dict)  # job key -> agents not to give it again
    strikes: collections.Counter[str] = field(default_factory=collections.Counter)
    handbacks: collections.Counter[str] = field(default_factory=collections.Counter)
    completed: collections.Counter[str] = field(default_factory=collections.Counter)

    def failed(self, key: str, agent: str) -> None:
        """An attempt failed on `agent`: not its fault yet, but try the job elsewhere next."""
        self.failed_on.setdefault(key, set()).add(agent)
        self.avoid.setdefault(key, set()).add(agent)

    def lost(self, key: str, agent: str) -> None:
        """The job went away with its agent (it left or dropped): prefer another one next time."""
        self.avoid.setdefault(key, set()).add(agent)

    def handed_back(self, key: str, agent: str, reason: str | None = None) -> str | None:
        """`agent` returned the job unstarted (``reason``: its words); returns why it is now
        blocklisted, if it is by this: at once when the reason is a `node_fault`."""
        self.avoid.setdefault(key, set()).add(agent)
        lacks = node_fault(reason)
        if lacks is not None:
            if agent in self.unable:
                return None
            self.unable[agent] = lacks
            return self._block(agent, f"unable to run this project: {lacks}")
        self.handbacks[agent] += 1
        excess = self.handbacks[agent] - self.completed[agent]
        if excess > self.handback_allowance and agent not in self.blocklist:
            return self._block(agent, f"handed back {counted(self.handbacks[agent], 'job')} and completed "
                                      f"{self.completed[agent]}")
        return None

    def succeeded(self, key: str, agent: str) -> list[str]:
        """The job is done on `agent`; the agents it failed on before get a strike each.

        Returns the agents blocklisted by this (each with its reason logged by the caller).
        """
        self.completed[agent] += 1
        self.avoid.pop(key, None)
        failed_on = self.failed_on.pop(key, None)
        if not failed_on:  # the common case: it failed nowhere
            return []
        blocked = []
        for other in sorted(failed_on - {agent}):
            self.strikes[other] += 1
            if self.strikes[other] >= self.strikes_limit and other not in self.blocklist:
                self._block(other, f"failed {counted(self.strikes[other], 'job')} "
                                   "that then succeeded on other agents")
                blocked.append(other)
        return blocked

    def succeeded_all(self, keys: list[str], agent: str) -> bool:
        """`succeeded` for jobs done on `agent` that failed nowhere (no strikes): True when it recorded
        them all; False, recording nothing, when one of them failed somewhere (call `succeeded` each)."""
        if self.failed_on and not self.failed_on.keys().isdisjoint(keys):
            return False
        self.completed[agent] += len(keys)
        if self.avoid:
            for key in keys:
                self.avoid.pop(key, None)
        return True

    def failed_for_good(self, key: str) -> None:
        """The job failed everywhere it ran (or its plugin said so): nobody's strike."""
        self.failed_on.pop(key, None)
        self.avoid.pop(key, None)

    def skip(self, key: str, agent: str, eligible: int, queued: bool = False) -> bool:
        """Leave this job for another agent? While an eligible agent has not had it, and always
        when it would wait queued on this agent (``queued``: its every slot is taken).

        A job tried before is never prefetched: the job it would wait behind may be the one that
        hangs (an agent cannot give back a job its worker holds), while another agent is idle.
        """
        had = self.avoid.get(key)
        return bool(had) and (queued or (agent in had and eligible > len(had)))

    def lift(self, agents: list[str]) -> None:
        """Take agents off the blocklist with a clean record (the run has no one else); unable
        agents stay on it (see `liftable`)."""
        for agent in agents:
            if agent in self.unable:
                continue
            self.blocklist.pop(agent, None)
            self.strikes.pop(agent, None)
            self.handbacks.pop(agent, None)
            self.completed.pop(agent, None)

    def liftable(self, agent: str) -> bool:
        """Whether `lift` would take this agent off the blocklist (not when it is unable)."""
        return agent not in self.unable

    def _block(self, agent: str, why: str) -> str:
        self.blocklist[agent] = why
        return why


def cannot_arrive(run: ProjectRun, agents: Sequence[AgentState], stalled: str,
                  local: list[int | None] | None) -> str | None:
    """Why no agent able to run a stalled run can come, or None while one may.

    :param stalled: why no connected agent can run it now (the controller's `stalled`).
    :param local: exit codes of a closed farm's agent processes (None: still running), or None for
        an open farm that any agent may join.
    """
    able = [a for a in agents if a.able(run.media.name, run.media.requirements)]
    if able and all(a.broken for a in able):
        return (f"every agent that can render {run.media.name!r} is broken: "
                + "; ".join(f"{a.id}: {a.broken}" for a in able))
    conduct = getattr(run, "conduct", None)  # stand-in runs of the scheduler's tests may have none
    unable = conduct.unable if conduct is not None else {}
    if able and all(a.broken or a.id in unable for a in able):
        return (f"no agent that can render {run.media.name!r} can run this project: "
                + "; ".join(f"{a.id}: {f'broken: {a.broken}' if a.broken else unable[a.id]}" for a in able))
    if local is None:
        return None
    running = sum(1 for code in local if code is None)
    if not running:
        codes = ", ".join(str(code) for code in local) or "none started"
        return f"every local agent has exited (exit codes: {codes}); {stalled}"
    if len(agents) >= running:  # all of them are here, and none can run it
        return stalled
    return None
