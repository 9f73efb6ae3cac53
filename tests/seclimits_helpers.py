"""A hostile local user's idle connections, for the descriptor-limit tests (real sockets, real processes)."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import socket
import sys
import time
from collections.abc import Iterator

# run a command with its open files limit set: the farm CLI can raise the soft one up to the hard one
_LIMIT = ("import os, resource, sys; "
          "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
          "os.execvp(sys.argv[3], sys.argv[3:])")


def limited(files: int, hard: int | None = None) -> list[str]:
    """A prefix for `join_helpers.Farm.start`: the command starts with at most `files` open files
    (and a hard limit of `hard`, by default the same: then nothing can raise it)."""
    return [sys.executable, "-c", _LIMIT, str(files), str(hard or files)]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def flood(port: int, count: int, payload: bytes = b"", wait_s: float = 5.0) -> Iterator[list[socket.socket]]:
    """`count` TCP connections to 127.0.0.1:`port`, each sending `payload` (an unfinished request, or
    nothing) and then holding still; yields the ones that connected, closes them all at the end."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 256), hard))
    pending: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            pending.append(sock)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", port))
            assert code in (0, errno.EINPROGRESS), os.strerror(code)
        poll = select.poll()  # select() stops at descriptor 1023
        for sock in pending:
            poll.register(sock, select.POLLOUT)
        ready: set[int] = set()
        deadline = time.monotonic() + wait_s
        while len(ready) < len(pending) and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poll.poll(left * 1000):
                ready.add(fd)
                poll.unregister(fd)
        connected = []
        for sock in (s for s in pending if s.fileno() in ready):
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                with contextlib.suppress(OSError):
                    if payload:
                        sock.send(payload)
                    connected.append(sock)
        yield connected
    finally:
        for sock in pending:
            sock.close()
