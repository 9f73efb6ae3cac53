"""A peer of another protocol version is told so in a frame it can read, not dropped in silence.

Every protocol version so far frames a message as ``[version, type][msgpack body]`` and has ERROR
(type 39) with a ``message`` string and an optional ``code``; an agent of any version so far stops,
and its ``farm agent`` exits non-zero printing the message, on an ERROR with code ``key_role``. So a
controller answers a message of another version with that ERROR framed in the sender's version,
saying which protocol each side speaks and which side to upgrade (a client prints the message too).
The answers are bounded as bad messages are (`farm.controller.peers`): a flood is soon ignored.

An agent that hears such an ERROR in a version other than its own stops the same way. A controller
of protocol 1 answers nothing at all: an agent that is never welcomed says that this may be why.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import zmq

from farm import __version__
from farm.controller.peers import BAD_BEFORE_IGNORING
from farm.protocol import PROTOCOL_VERSION, T

log = logging.getLogger(__name__)

#: the one ERROR code on which agents of every protocol version so far stop instead of saying HELLO again
STOP_CODE = "key_role"
_MAX_BODY = 64 * 1024  # a refusal or HELLO read leniently; anything bigger is not one


def spoken(frames: list[bytes]) -> int | None:
    """The protocol version a message's header frame names, or None if the header is malformed."""
    head = bytes(frames[0]) if frames else b""
    return head[0] if len(head) == 2 else None


def _body(frames: list[bytes]) -> dict[str, Any]:
    """The body of a message of another version, read leniently: {} unless it is a small map."""
    raw = bytes(frames[1]) if len(frames) > 1 else b""
    if len(raw) > _MAX_BODY:
        return {}
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=lambda code, data: None)
    except Exception:
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: Any, limit: int = 80) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def upgrade_advice(theirs: int) -> str:
    """What to do when the controller speaks this side's protocol and a peer speaks ``theirs``."""
    ours = (f"the controller speaks farm protocol {PROTOCOL_VERSION} (farm {__version__}), "
            f"this program protocol {theirs}")
    if theirs < PROTOCOL_VERSION:
        return f"{ours}: upgrade farm on this machine to the controller's release, then start this again"
    return f"{ours}: upgrade farm on the controller's machine to this program's release"


def refuse(ctl: Any, identity: bytes, frames: list[bytes], key: str | None) -> bool:
    """Answer a message of another protocol version at the controller ``ctl`` (its socket, budgets and
    health); False if ``frames`` are of this version (or no header at all): a bad message, not a skew.

    The log line names the sender as its HELLO does (agent id, host, farm version) and its key.
    """
    theirs = spoken(frames)
    if theirs is None or theirs == PROTOCOL_VERSION:
        return False
    ctl.health["bad_messages"] += 1
    count = ctl.budgets.strike(identity)
    if count >= BAD_BEFORE_IGNORING:
        return True  # ignored for a while now, as any peer sending bad messages
    said = _body(frames) if bytes(frames[0])[1] == T.HELLO else {}
    agent, host, version = (_text(said.get(name), 80) for name in ("agent", "host", "version"))
    who = ", ".join(part for part in (  # quoted: a peer's words, which may hold anything
        f"agent {agent!r}" if agent else None, f"on host {host!r}" if host else None,
        f"farm {version!r}" if version else None, f"key {key}" if key else None) if part) \
        or f"peer {identity[:32]!r}"
    log.log(logging.WARNING if count == 1 else logging.DEBUG,
            "refused %s: it speaks farm protocol %d, this controller %d (farm %s); told it to upgrade %s",
            who, theirs, PROTOCOL_VERSION, __version__,
            "farm on its machine" if theirs < PROTOCOL_VERSION else "this controller")
    body = msgpack.packb({"message": upgrade_advice(theirs), "code": STOP_CODE}, use_bin_type=True)
    try:
        ctl.sock.send_multipart([identity, bytes((theirs, T.ERROR)), body], zmq.NOBLOCK)
    except zmq.ZMQError as exc:  # gone, or not reading: it was told what it could be told
        log.debug("cannot answer %r: %s", identity[:32], exc)
    return True


def heard(frames: list[bytes], controller: str) -> str | None:
    """An agent's reading of a controller's message of another protocol version: why it must stop
    (an ERROR with a message: the controller refused it for its version), or None (just a bad message)."""
    theirs = spoken(frames)
    if theirs is None or theirs == PROTOCOL_VERSION or bytes(frames[0])[1] != T.ERROR:
        return None
    message = _text(_body(frames).get("message"), 1000)
    if message is None:
        return None
    return (f"the controller at {controller} speaks farm protocol {theirs}, this agent {PROTOCOL_VERSION} "
            f"(farm {__version__}); it says: {message}")


def silence_hint(welcomed: bool) -> str:
    """What an agent adds when its controller has been silent: never welcomed, it may be an older one."""
    if welcomed:
        return ""
    return (f" (no answer to this agent's HELLO: a controller of an older farm, speaking a protocol "
            f"before {PROTOCOL_VERSION}, drops it unanswered, its log saying 'protocol version "
            f"{PROTOCOL_VERSION} is not supported': then upgrade farm on the controller's machine)")
