"""Helpers for the scheduler-fault tests: the CLI as a user runs it, interpreters that cannot
start workers, a third-party plugin installed on PYTHONPATH, and hand-written agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import zmq
from blake3 import blake3
from wire_helpers import job_map, result_row

from farm.protocol import T, pack, unpack


def farm_cli(*args: str, cwd: Path, python: str = sys.executable, env: dict[str, str] | None = None,
             timeout: float = 180) -> tuple[int, dict[str, Any] | None, str]:
    """Run ``farm ARGS`` as its console script would (-P: the current folder is not on sys.path).

    Returns the exit code, the JSON summary (if one was printed) and stderr.
    """
    done = subprocess.run([python, "-P", "-m", "farm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, json.loads(lines[-1]) if lines else None, done.stderr


def failing_interpreter(folder: Path, fails: str, how: str, *, while_exists: Path | None = None) -> Path:
    """A python that runs everything but what matches `fails` (a module name in argv).

    `how`: "message" exits 3 after an error on stderr; "signal" is killed with nothing said.
    With `while_exists`, it fails only while that file exists (a node that gets mended).
    """
    folder.mkdir(parents=True, exist_ok=True)
    action = {"message": "echo \"ImportError: cannot import name 'Worker' (a broken install)\" >&2; exit 3",
              "signal": "kill -9 $$"}[how]
    if while_exists is not None:
        action = f"if [ -e '{while_exists}' ]; then {action}; fi"
    wrapper = folder / "python"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        case " $* " in *" {fails} "*) {action};; esac
        exec -a "$0" {sys.executable} "$@"
        """))
    wrapper.chmod(0o755)
    return wrapper


def install_plugin(folder: Path, module: str, source: str, media_type: str) -> Path:
    """A third-party plugin as pip would leave it: a module and its dist-info with the entry point."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[farm.plugins]\n{media_type} = {module}\n")
    return folder


class HandWrittenAgent:
    """A peer speaking farm's agent protocol directly.

    `answer(job) -> (result, files)` answers each job; None keeps it unanswered (held).
    """

    def __init__(self, url: str, agent_id: str, answer: Any, *, caps: tuple[str, ...] = ("synthetic",),
                 slots: int = 4, identity: bytes | None = None, session: str | None = None,
                 held: list[str] | None = None, node: Any = None, host: str = "elsewhere") -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        self.sock.connect(url)
        self.answer = answer
        self.jobs = 0
        self.leases: list[str] = []
        self.welcome: dict[str, Any] | None = None
        self.hello = {"agent": agent_id, "host": host, "pid": 1, "slots": slots, "prefetch": 0,
                      "caps": list(caps), "held": held or [], "version": "0"}
        if session:
            self.hello["session"] = session
        if node is not None:  # a node token (farm.agent.nodetoken), or anything a test sends as one
            self.hello["node"] = node
        self._stop = threading.Event()
        self.sock.send_multipart(pack(T.HELLO, self.hello))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            if self.sock.poll(50):
                msg = unpack(self.sock.recv_multipart())
                if msg.type is T.WELCOME:
                    self.welcome = msg.body
                    # answer the jobs it says it still has
                    answers = [self.answer({"lease": lease}) for lease in self.hello["held"]]
                    results = [result_row(a[0]) for a in answers if a is not None]
                    if results:
                        self.sock.send_multipart(pack(T.RESULTS, {"results": results}))
                elif msg.type is T.JOBS:
                    results, payloads = [], []
                    for job in map(job_map, msg.body["jobs"]):
                        self.jobs += 1
                        self.leases.append(job["lease"])
                        answered = self.answer(job)
                        if answered is not None:
                            results.append(result_row(answered[0]))
                            payloads += answered[1]
                    if results:
                        self.sock.send_multipart(pack(T.RESULTS, {"results": results}, payloads))
            if time.monotonic() - last > 0.3:
                last = time.monotonic()
                self.sock.send_multipart(pack(T.HEARTBEAT))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close(0)


def requeue(job: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """An answer handing the job back unstarted."""
    return ({"lease": job["lease"], "ok": False, "result": None, "files": [], "error": "not started: busy",
             "duration": 0.0, "requeue": True}, [])


def oversized(size: int) -> Any:
    """An answer with one verified output of `size` bytes, whatever the job asked for."""
    def answer(job: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        data = b"x" * size
        return ({"lease": job["lease"], "ok": True, "result": None,
                 "files": [[f"{job['key']}.bin", size, blake3(data).digest()]], "duration": 0.0}, [data])
    return answer
