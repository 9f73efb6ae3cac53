"""An agent's done and failed jobs, counted over the controller's life: across its reconnects and
its node's restarts.

`farm status` showed "done 3" for an agent killed and started again (same node, same ``--id``)
that had done 16: dropping a process (its liveness timeout, its BYE, its node's next process
showing the node token) took its counters with it. The controller knows the agent again, as it
gives it its id back: by its session (the same process, back after a silence), or by its node
token with its id, host and key (the node's next process, `farm.controller.restarts`); either
takes the counters on. An agent without a token (started without ``--id``) comes back under a
new id: a new agent, counted from 0. A controller restart starts every count again.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from farm.controller.registry import AgentState

REMEMBERED = 4096  # departed agents' counters kept; a flood of HELLOs cannot grow memory


class DepartedCounts:
    """Counters of agents that left, until the same process or the next of its node says HELLO."""

    def __init__(self) -> None:
        self.by_session: dict[tuple[str, str], tuple[int, int]] = {}  # (session, key) -> (done, failed)
        self.by_node: dict[tuple[str, str, str, str], tuple[int, int]] = {}  # (token, id, host, key) -> ...

    def left(self, agent: AgentState) -> None:
        """`agent` was dropped: keep its counters for its return."""
        counts = (agent.done, agent.failed)
        if agent.session:
            _keep(self.by_session, (agent.session, agent.key or ""), counts)
        if agent.node:
            _keep(self.by_node, (agent.node, agent.id, agent.host, agent.key or ""), counts)

    def returned(self, agent: AgentState, shared_tokens: Container[str]) -> None:
        """`agent` joined as a new entry: if it is one that left (its session), or its node's next
        process (its token, unless two live agents showed it), it takes that one's counters on."""
        by_session = self.by_session.pop((agent.session, agent.key or ""), None) if agent.session else None
        node_key = (agent.node, agent.id, agent.host, agent.key or "")
        by_node = self.by_node.pop(node_key, None) if agent.node else None
        found = by_session or (by_node if agent.node not in shared_tokens else None)
        if found is not None:
            agent.done += found[0]
            agent.failed += found[1]


def _keep(remembered: dict[Any, tuple[int, int]], key: Any, counts: tuple[int, int]) -> None:
    remembered.pop(key, None)  # the newest last: the oldest go first
    remembered[key] = counts
    while len(remembered) > REMEMBERED:
        del remembered[next(iter(remembered))]
