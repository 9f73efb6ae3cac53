"""Connected agents: who they are, what they hold, when we last heard from them."""

from __future__ import annotations

import collections
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any

LOOKAHEAD_S = 0.02  # how much queued work beyond its slots an agent may hold (fast jobs only)
#: while its last job took up to this long, an agent gets one more queued behind each slot's, so
#: a worker goes on to its next job without a round trip to us (a few ms: 5 to 10 % of a 60 ms frame)
QUEUE_ONE_S = 0.5
REFUSED_SHOWN = 20  # agents cut off for their key, remembered for `farm status`


@dataclass
class AgentState:
    identity: bytes  # ZeroMQ routing id
    id: str  # the id it claims (renamed if a live agent has it)
    host: str
    slots: int
    prefetch: int
    caps: set[str]
    missing: dict[str, str]
    key: str | None = None  # its authenticated public key, when CURVE is on
    key_name: str | None = None  # that key's name in the controller's allowed/ folder
    session: str = ""  # the agent process's secret token: a reconnect shows it, an impostor cannot
    node: str = ""  # its node's secret token (farm.agent.nodetoken): the node's next process shows it
    broken: str | None = None  # why it cannot run anything (its workers die at start), if so
    plugins: dict[str, str] | None = None  # {media type: plugin version} it said it has (None: not said)
    skew: dict[str, str] = field(default_factory=dict)  # media type -> why it gets none of its jobs
    held: set[str] = field(default_factory=set)  # leases it holds, known to us or not
    known_projects: set[str] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)
    last_sent: float = 0.0  # when we last sent it anything (a heartbeat is due a second later)
    joined: float = field(default_factory=time.time)
    avg_job_s: float | None = None
    avg_run: str | None = None  # the run whose job times it measured last (`observe`)
    last_job_s: float | None = None  # the newest job's time: a slot's first includes its renderer's start
    done: int = 0
    failed: int = 0

    def capacity(self) -> int:
        """Jobs it may hold now: its slots, plus a prefetch covering LOOKAHEAD_S of work, and at
        least one job per slot while its last job took up to QUEUE_ONE_S (never over ``prefetch``).

        Longer jobs (and jobs of unknown length) get no prefetch, so a long job never waits
        queued on a busy agent while another agent is idle. A short one queued behind a job that
        then hangs costs little: the run cannot end before that job's timeout, when it is handed
        back; at the end of a run an agent may wait at most one short job for another's.
        """
        if self.avg_job_s is None:
            return self.slots
        extra = math.floor(self.slots * LOOKAHEAD_S / max(self.avg_job_s, 1e-6))
        if self.last_job_s is not None and self.last_job_s <= QUEUE_ONE_S:
            extra = max(extra, self.slots)
        return self.slots + min(self.prefetch, extra)

    def free(self) -> int:
        return self.capacity() - len(self.held)

    def observe(self, duration: float, run: str) -> None:
        """A job of `run` took `duration` seconds on it."""
        self.avg_job_s = duration if self.avg_job_s is None else 0.8 * self.avg_job_s + 0.2 * duration
        self.avg_run = run
        self.last_job_s = duration

    def forget_times(self) -> None:
        """Its job times measured runs that hand out no more jobs: say nothing of the next run's
        (a mean of 1 ms no-op jobs would prefetch a slow run's jobs onto this agent alone)."""
        self.avg_job_s = self.avg_run = self.last_job_s = None

    def can_run(self, media_type: str, requirements: tuple[str, ...]) -> bool:
        """It may get this media type's jobs now: able, not broken, with the controller's plugin version."""
        return self.broken is None and media_type not in self.skew and self.able(media_type, requirements)

    def able(self, media_type: str, requirements: tuple[str, ...]) -> bool:
        """It has what the media type needs (whether or not it is broken now)."""
        return media_type in self.caps and all(r in self.caps for r in requirements)

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "key": self.key_name,
            "slots": self.slots,
            "capabilities": sorted(self.caps),
            "unavailable": self.missing,
            "jobs": len(self.held),
            "done": self.done,
            "failed": self.failed,
            "last_heartbeat_s": round(now - self.last_seen, 2),
            "broken": self.broken,
            "plugins": self.plugins,
            "skew": self.skew,
        }


class Registry:
    """The connected agents by routing id.

    ``hungry`` holds the agents that may have free capacity, so a dispatch turn looks at those,
    not at every agent: one joins it on `add` and whenever a lease of it ends (`wake`), and
    leaves it when a turn finds it full. ``version`` changes whenever an agent comes or goes.
    """

    def __init__(self) -> None:
        self.agents: dict[bytes, AgentState] = {}
        self.hungry: dict[bytes, AgentState] = {}  # insertion-ordered, like agents
        self.version = 0
        # agent ids given no new jobs (live control: `farm drain`); by id, so it outlives a reconnect
        self.draining: set[str] = set()
        self.left: set[str] = set()  # ids of agents that went and have not come back (`stalled` says so)
        self.left_at: float | None = None  # when the last of them went (wall clock)

    def __iter__(self):
        return iter(list(self.agents.values()))

    def __len__(self) -> int:
        return len(self.agents)

    def get(self, identity: bytes) -> AgentState | None:
        return self.agents.get(identity)

    def add(self, agent: AgentState) -> None:
        """Register an agent under its routing id (a reconnect comes on a new one; see _identify)."""
        self.agents[agent.identity] = agent
        self.hungry[agent.identity] = agent
        self.left.discard(agent.id)
        self.version += 1

    def wake(self, agent: AgentState) -> None:
        """The agent may have room again (a lease of it ended)."""
        if self.agents.get(agent.identity) is agent:
            self.hungry[agent.identity] = agent

    def by_id(self, agent_id: str) -> AgentState | None:
        """The connected agent known by this id, if any."""
        return next((a for a in self.agents.values() if a.id == agent_id), None)

    def by_session(self, session: str) -> AgentState | None:
        """The connected agent that showed this (secret) session token, if any."""
        return next((a for a in self.agents.values() if session and a.session == session), None)

    def free_id(self, wanted: str) -> str:
        """`wanted`, or `wanted-2`, `wanted-3`, ...: the first id no connected agent uses."""
        taken = {a.id for a in self.agents.values()}
        if wanted not in taken:
            return wanted
        return next(f"{wanted}-{n}" for n in range(2, len(taken) + 3) if f"{wanted}-{n}" not in taken)

    def remove(self, identity: bytes) -> AgentState | None:
        self.hungry.pop(identity, None)
        self.version += 1
        agent = self.agents.pop(identity, None)
        if agent is not None and self.by_id(agent.id) is None:
            self.left.add(agent.id)
            self.left_at = time.time()
        return agent

    @functools.cached_property
    def refused(self) -> collections.deque[tuple[float, dict[str, Any]]]:
        """Agents cut off because their key is no longer allowed: (when, in epoch s; who)."""
        return collections.deque(maxlen=REFUSED_SHOWN)

    def refuse(self, agent: AgentState, reason: str) -> None:
        """Remember an agent cut off for its key (it is removed from the registry by the caller)."""
        self.refused.append((time.time(), {"id": agent.id, "host": agent.host, "key": agent.key_name,
                                           "public_key": agent.key, "reason": reason}))

    def refusals(self, now: float) -> list[dict[str, Any]]:
        """The agents cut off lately, newest first, each with ``seconds_ago``."""
        return [{**found, "seconds_ago": round(now - when, 1)} for when, found in reversed(self.refused)]

    def expired(self, now: float, timeout: float) -> list[AgentState]:
        return [a for a in self.agents.values() if now - a.last_seen > timeout]
