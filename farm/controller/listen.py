"""The controller's listening side, set up before its loop starts: the state folder it holds
alone, the ROUTER socket's options, binding (a port of 0 picks a free one), and telling a peer
in this process (the HTTP API over ``inproc://``) from a remote one.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

import zmq

from farm.errors import FarmError
from farm.paths import private_dir
from farm.protocol import HANDSHAKE_MS, MAX_MESSAGE
from farm.security import ServerSecurity


def claim_state_dir(state_dir: Path) -> IO[bytes]:
    """Create the state folder and its private subfolders and lock it (see `lock_state_dir`)."""
    for folder in (state_dir, state_dir / "uploads", state_dir / "staging", state_dir / "cache"):
        private_dir(folder)  # projects, outputs and journal are the submitters' business alone
    return lock_state_dir(state_dir)


def router_socket(security: ServerSecurity | None) -> zmq.Socket:
    """The controller's ROUTER socket, not yet bound: CURVE and enrolment set up when `security` is given."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable sends raise instead of vanishing
    # No ROUTER_HANDOVER: a peer that connects with a live routing id is refused, never handed
    # that peer's traffic; agents take a fresh random routing id per connection instead.
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)  # outputs ride inline; see farm.protocol
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)  # a connection that never handshakes is dropped soon
    if security:
        security.socket_setup(sock, enrolment=True)  # a join token's key may redeem it here
    return sock


def in_process(frame: zmq.Frame) -> bool:
    """Whether a message came over ``inproc://``: with no handshake, it carries no metadata at all.

    On a CURVE socket every tcp:// and ipc:// peer passed the handshake, which gives its
    messages a ``Socket-Type`` (and a ``User-Id``); only an in-process peer has none.
    """
    try:
        frame.get("Socket-Type")
    except zmq.ZMQError:
        return True
    return False


def lock_state_dir(folder: Path) -> IO[bytes]:
    """Hold the state folder for this controller alone: two journals in one file would corrupt each other."""
    handle = open(folder / "controller.lock", "wb")  # noqa: SIM115 (held for the controller's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FarmError(f"another controller is using the state folder {folder}; "
                        "stop it, or give this one its own --state-dir") from None
    return handle


def bind(sock: zmq.Socket, url: str) -> str:
    """Bind, resolving port 0 to a free port; returns the address clients should use."""
    if url.startswith("tcp://") and url.rsplit(":", 1)[-1] in ("0", "*"):
        host = url[len("tcp://"):].rsplit(":", 1)[0]
        port = sock.bind_to_random_port(f"tcp://{host}")
        return f"tcp://{'127.0.0.1' if host in ('*', '0.0.0.0') else host}:{port}"
    sock.bind(url)
    return url
