"""Helpers for the hostile-peer tests: a raw client speaking farm's protocol, and running code as nobody.

The attacks in `../shared/cases/security/README.md` are small hand-written clients; these
are the same, written once.
"""

from __future__ import annotations

import os
import pickle
import select
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq
from blake3 import blake3

from farm.protocol import Message, T, pack, unpack

NOBODY = 65534


class Raw:
    """A DEALER speaking farm's protocol to a controller, as an attacker would: no client library."""

    def __init__(self, url: str, context: zmq.Context | None = None) -> None:
        self.sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)

    def send(self, kind: T, body: dict[str, Any] | None = None, payloads: list[bytes] | None = None) -> None:
        self.sock.send_multipart(pack(kind, body, payloads or []))

    def recv(self, timeout: float = 30.0, skip: tuple[T, ...] = (T.HEARTBEAT, T.UPDATE)) -> Message:
        """The next message not in ``skip``; raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise TimeoutError(f"no answer within {timeout}s")
            msg = unpack(self.sock.recv_multipart())
            if msg.type not in skip:
                return msg

    def ask(self, kind: T, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Message:
        self.send(kind, body)
        return self.recv(timeout)

    def close(self) -> None:
        self.sock.close(0)


def status_round_trip(url: str, timeout: float = 30.0) -> float:
    """Seconds one STATUS takes to be answered, on a fresh connection."""
    raw = Raw(url)
    try:
        started = time.monotonic()
        reply = raw.ask(T.STATUS, timeout=timeout)
        assert reply.type is T.STATUS_REPLY, reply
        return time.monotonic() - started
    finally:
        raw.close()


def output_frame(name: str, data: bytes) -> list[Any]:
    """A RESULTS file entry for ``data``: name, size, blake3 digest."""
    return [name, len(data), blake3(data).digest()]


def answer_jobs_as_agent(url: str, files: dict[str, bytes], timeout: float = 30.0,
                         caps: tuple[str, ...] = ("synthetic",), duration: float = 0.01) -> int:
    """A hand-written agent: HELLO, then answer every job it gets with ``files``; returns jobs answered."""
    agent = Raw(url)
    answered = 0
    try:
        agent.send(T.HELLO, {"agent": f"rogue-{os.getpid()}", "host": "x", "pid": os.getpid(), "slots": 4,
                             "prefetch": 0, "caps": list(caps), "held": [], "version": "0"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = agent.recv(max(0.1, min(2.0, deadline - time.monotonic())))
            except TimeoutError:
                if answered:
                    return answered
                continue
            if msg.type is not T.JOBS:
                continue
            for job in msg.body["jobs"]:
                outputs = [output_frame(n, d) for n, d in files.items()]  # job[0]: its lease
                row = [job[0], True, None, outputs, None, None, duration, False, True]  # a RESULT_ROW
                agent.send(T.RESULTS, {"results": [row]}, list(files.values()))
                answered += 1
        return answered
    finally:
        agent.close()


@contextmanager
def nobody_folder() -> Iterator[Path]:
    """A fresh folder in /tmp owned by nobody (pytest's own tmp folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="farm-hostile-"))
    os.chmod(folder, 0o755)
    os.chown(folder, NOBODY, NOBODY)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def as_nobody(fn: Callable[..., Any], *args: Any, timeout: float = 120.0) -> Any:
    """Run ``fn(*args)`` in a forked child that has become the user nobody; returns its (picklable) result.

    Python lives under /root here, so a fresh interpreter could not start as nobody: the
    child is a fork of this process, and makes its own ZeroMQ context.
    """
    if os.geteuid() != 0:
        return fn(*args)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's threads survives the fork; finish with _exit
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            zmq.Context.instance()  # pyzmq gives a forked child a context of its own
            try:
                outcome: tuple[bool, Any] = (True, fn(*args))
            except BaseException as exc:
                outcome = (False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(outcome, out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as inp:
        if not select.select([inp], [], [], timeout)[0]:
            os.kill(pid, 9)
        data = inp.read()  # until the child exits (or was killed)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the child running as nobody failed or hung"
    ok, value = pickle.loads(data)
    if not ok:
        raise AssertionError(f"as nobody: {value}")
    return value
