"""A render node's proof, after a crash, that it is the node an agent id belonged to.

`farm agent --id ID` keeps a random token in ``$XDG_STATE_HOME/farm/agents/ID.node`` (mode
0600 in a 0700 folder) and holds ``flock`` on that file for as long as it runs; the kernel lets
go of it however the agent ends. The agent shows the token in its HELLO (the ``node`` field).
A controller that still counts an agent of that id from this host, key and token as live knows
it for this node's dead predecessor (a live one would hold the lock), drops it at once as a
liveness timeout would, and gives the id back to the new process: a node that crashed and came
back keeps its name, its `farm drain` and its history (`farm.controller.restarts`).

A second agent with the same id on this machine cannot take the lock: it is told so here, runs
without a token, and a controller that both serve knows it by another name, as two nodes
started with one ``--id`` always are. Nothing here is fatal: without a token an agent works as
before, and its restart waits for the controller's liveness timeout to free its id.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from farm.paths import private_dir, state_dir

log = logging.getLogger(__name__)

SUFFIX = ".node"
TOKEN = re.compile(r"[0-9a-f]{64}")  # what we write: 32 random bytes in hex


@dataclass
class NodeToken:
    """This node's token for one agent id, and the open, locked file that holds it."""

    token: str
    path: Path
    lock: IO[bytes]

    def release(self) -> None:
        self.lock.close()


def default_folder() -> Path:
    return state_dir() / "agents"


def claim(agent_id: str, folder: Path | None = None) -> NodeToken | None:
    """The token of ``agent_id`` on this node, made on first use and locked until `release`.

    None, with a warning that says why, if another live agent of this machine holds it (or it
    cannot be kept: an unwritable or foreign folder). ``agent_id`` is a checked name
    (`farm.ids.check_name`): one path component.
    """
    folder = folder or default_folder()
    path = folder / f"{agent_id}{SUFFIX}"
    try:
        private_dir(folder)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.warning("cannot keep this node's token for agent id %r in %s (%s): a restart of this agent "
                    "keeps its id only once the controller has declared this one dead", agent_id, folder, exc)
        return None
    handle = os.fdopen(fd, "r+b")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise OSError(f"{path} is not a file of ours")
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("an agent with the id %r already runs on this machine (%s): this one runs without "
                        "the node's token, and a controller they share knows it by another name (give each "
                        "agent its own --id)", agent_id, _holder(handle))
            handle.close()
            return None
        token = _token_in(handle) or _new_token(handle, folder)
        said = f"{token}\npid {os.getpid()}\n".encode()  # for people: who holds it
        os.pwrite(fd, said, 0)  # over the same token bytes: no moment without them
        os.ftruncate(fd, len(said))
    except OSError as exc:
        handle.close()
        log.warning("cannot use this node's token for agent id %r (%s): a restart of this agent keeps its id "
                    "only once the controller has declared this one dead", agent_id, exc)
        return None
    return NodeToken(token, path, handle)


def _token_in(handle: IO[bytes]) -> str | None:
    handle.seek(0)
    first = handle.read(80).split(b"\n", 1)[0].decode("ascii", "replace")
    return first if TOKEN.fullmatch(first) else None


def _new_token(handle: IO[bytes], folder: Path) -> str:
    """A new token, on disk before it is shown to anyone: one that a power cut lost would not
    prove the node after it."""
    token = secrets.token_hex(32)
    fd = handle.fileno()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{token}\n".encode(), 0)
    os.fsync(fd)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return token


def _holder(handle: IO[bytes]) -> str:
    handle.seek(0)
    lines = handle.read(200).decode("ascii", "replace").splitlines()
    return lines[1] if len(lines) > 1 and lines[1].startswith("pid ") else "another process"
