"""Key roles on the controller's file service: the rule set of the job socket (`farm.controller.roles`).

An agent's key fetches the asset trees of runs and takes part in the swarm (``peers``, ``claim``);
a client's key uploads projects (``offer``, ``put``, ``commit``, ``abort``) and fetches runs'
outputs; ``both`` does all. Anything else is answered with an error (code ``key_role``) naming the
key and the fix, as on the job socket (`farm.security.role_refusal`), and not handled. A tree this
service does not publish is nobody's: the request goes on to be answered "not published".
Without keys (no ServerSecurity, or an in-process peer) there is no role to check.
"""

from __future__ import annotations

from collections.abc import Callable

from farm.filesync import wire
from farm.security import ServerSecurity

AGENT_OPS = frozenset({wire.PEERS, wire.CLAIM})
CLIENT_OPS = frozenset({wire.OFFER, wire.PUT, wire.COMMIT, wire.ABORT})


class FileRoles:
    """``access`` for `farm.filesync.FileServer`: which side (agent, client) a request is, and
    whether its key's role covers it. ``kind(tree)``: "assets", "outputs" or None (not published)."""

    def __init__(self, security: ServerSecurity, kind: Callable[[str], str | None]) -> None:
        self.security = security
        self.kind = kind

    def __call__(self, request: wire.Request) -> str | None:
        if request.user is None:
            return None
        if not self.security.allows(request.user):
            return "this key is no longer allowed (revoked)"
        side = self.side(request)
        return None if side is None else self.security.refusal(request.user, side)

    def side(self, request: wire.Request) -> str | None:
        if request.op in AGENT_OPS:
            return "agent"
        if request.op in CLIENT_OPS:
            return "client"
        if request.op == wire.GET:  # blocks by hash: a hash is learnt from a manifest, which the role gates
            return None
        kind = self.kind(str(request.body.get("tree", "")))
        return {"assets": "agent", "outputs": "client"}.get(kind or "")


def members(security: ServerSecurity) -> Callable[[], list[str]]:
    """The keys (Z85) an agent's block server admits: allowed keys with the agent role, or both
    (the controller's own pair among them: what this user's local agents hold)."""
    return lambda: security.keys_with_role("agent", "both")
