"""Key roles on the controller's job socket: a render node's key may not steer, a client's may not serve.

Every allowed key has a role (`farm.keys.ROLES`: agent, client or both; see docs/security.md).
A message from the side its key's role does not cover is answered with an ERROR naming the key
and what to use instead (code ``key_role``: an agent told so stops, as retrying cannot help),
and is not handled. Read-only client messages (STATUS, QUERY, FOLLOW, EVENTS) are client
messages too: a node's key has no business reading other projects (least privilege).
In-process peers (the HTTP API) and controllers without keys have no key, so no role.
"""

from __future__ import annotations

import logging
from typing import Any

from farm.controller.clients import CLIENT_MESSAGES
from farm.protocol import T

log = logging.getLogger(__name__)

KEY_ROLE = "key_role"  # the ERROR code of a refusal
_logged: set[tuple[str, T]] = set()  # (key, message type) refusals logged: a flood of them is logged once


def refused(ctl: Any, identity: bytes, kind: T, key: str | None) -> bool:
    """Answer and drop a message of `kind` the key `key` may not send; True if it was refused.

    `ctl`: the `farm.controller.server.Controller` (its security, registry, _send, _drop_agent).
    """
    if ctl.security is None or key is None:
        return False
    why = ctl.security.refusal(key, "client" if kind in CLIENT_MESSAGES else "agent")
    if why is None:
        return False
    if (key, kind) not in _logged and len(_logged) < 1000:
        _logged.add((key, kind))
        log.warning("refused %s from %r: %s", kind.name, identity[:32], why)
    ctl._send(identity, T.ERROR, {"message": why, "code": KEY_ROLE})
    agent = ctl.registry.get(identity)
    if agent is not None:  # its key's role changed while it served: it goes, and its jobs with it
        ctl._drop_agent(agent, "its key may no longer serve as an agent")
    return True
