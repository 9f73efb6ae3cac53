"""A render node that crashed and came back: known by its node token, it gets its id back at once.

An agent started with ``--id`` shows a node token in its HELLO (`farm.agent.nodetoken`): a
secret kept on the node, locked by the agent that runs there. A HELLO claiming the id of a
live agent from the same host, with the same key and token, comes from that node's next agent
process; the live one can only be its dead predecessor (a live process would hold the lock),
which the controller has not noticed yet (a power cut, a network that lost the connection's
end). The controller then drops the predecessor the way a liveness timeout does (its leases
requeued, ``agent.left``) and the new process takes its id: the node keeps its name, a
`farm drain` of it, and its history (its done and failed counts: `farm.controller.agentcounts`).
Anyone else claiming a live id is renamed, as before (`farm.controller.agents`).

A token copied to another machine (a cloned disk with the same host name and ``--id``) would
make two live nodes displace each other. The first time a dropped predecessor speaks again
(its session, in a new HELLO), it was alive: the token is marked shared and proves nothing
from then on, and both are warned about.
"""

from __future__ import annotations

import logging
from typing import Any

from farm.controller.registry import AgentState, Registry
from farm.errors import ProtocolError

log = logging.getLogger(__name__)

TOKEN_CHARS = (32, 128)  # what a token may be: 32..128 ASCII letters and digits (agents send 64 hex)
REMEMBERED = 4096  # displaced sessions and shared tokens kept; a flood of HELLOs cannot grow memory


def node_token(body: dict[str, Any]) -> str:
    """A HELLO's node token ("" without one), checked where it enters."""
    token = body.get("node")
    if token is None:
        return ""
    low, high = TOKEN_CHARS
    if not (isinstance(token, str) and low <= len(token) <= high and token.isascii() and token.isalnum()):
        shown = f"{len(token)} characters" if isinstance(token, str) else type(token).__name__
        raise ProtocolError(f"HELLO: node token ({shown}) is not {low}-{high} ASCII letters and digits")
    return token


class Restarts:
    """What the controller remembers to tell a restarted node from a second live one."""

    def __init__(self) -> None:
        self.displaced: dict[str, str] = {}  # session of a predecessor dropped for a restart -> its token
        self.shared: dict[str, None] = {}  # tokens two live processes showed, proving nothing (oldest first)

    def predecessor(self, registry: Registry, claims: dict[bytes, str], claimed: str, session: str,
                    node: str, key: str | None, host: str) -> AgentState | None:
        """The live agent this HELLO's process succeeds on its node, if any (to drop, then take its id)."""
        if session in self.displaced:  # a predecessor we dropped speaks: it was alive, the token is shared
            self._shared(self.displaced.pop(session), claimed, host)
        if not node or node in self.shared:
            return None
        for agent in registry:
            if (agent.node == node and agent.key == key and agent.host == host
                    and claims.get(agent.identity, agent.id) == claimed):
                return agent
        return None

    def dropped(self, agent: AgentState) -> None:
        """``agent`` was dropped as the predecessor of a restarted process."""
        if agent.session:
            self.displaced[agent.session] = agent.node
            _bound(self.displaced)

    def _shared(self, node: str, claimed: str, host: str) -> None:
        self.shared[node] = None
        _bound(self.shared)
        log.warning("two live agents on hosts named %s showed the node token of agent id %r: its state "
                    "folder was copied to another machine (a cloned disk?); the token proves no restart from "
                    "now on, and the second is known by another id. Give each node its own --id, and remove "
                    "agents/%s.node from the copy's state folder ($XDG_STATE_HOME/farm)",
                    host, claimed, claimed)


def _bound(remembered: dict[str, Any]) -> None:
    while len(remembered) > REMEMBERED:
        del remembered[next(iter(remembered))]  # the oldest
