"""Hand-written controllers for testing what a real `farm agent` process does with their word.

`RogueController` is a plain ROUTER socket speaking farm's protocol, with farm's own file
server beside it to publish project files: it sends whatever a test tells it to. `AgentTmp`
gives agent processes a temporary folder of the test's, to look into what they wrote.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
from conftest import wait_for
from wire_helpers import result_map

from farm.embedded import stop_agents
from farm.filesync import FileServer, build_manifest
from farm.project import Project, load_project
from farm.protocol import T, pack, unpack


class AgentTmp:
    """A short TMPDIR for agent processes (their scratch folders land in it; ipc paths stay short)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fa-"))

    @property
    def env(self) -> dict[str, str]:
        return {"TMPDIR": str(self.dir)}

    def lines(self, name: str) -> list[str]:
        """The lines of every ``name`` in the agents' copies of projects (e.g. a synthetic render_log)."""
        out: list[str] = []
        for path in sorted(self.dir.glob(f"farm-agent-*/projects/*/{name}")):
            out += path.read_text().split()
        return out

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class RogueController:
    """A controller written by hand: answers HELLO and heartbeats, sends what the test says.

    ``results`` maps lease -> the RESULT the agent sent (files' bytes under ``"payloads"``).
    """

    def __init__(self, tmp_path: Path) -> None:
        self.zctx = zmq.Context.instance()
        self.sock = self.zctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # an agent that reconnects keeps its routing id
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{port}"
        self.files = FileServer("tcp://127.0.0.1:*").start()
        self.tmp_path = tmp_path
        self.agent: bytes | None = None
        self.hello: dict[str, Any] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.last_sent = 0.0

    def start_agent(self, *extra: str, cache: Path | None = None, env: dict[str, str] | None = None) -> None:
        """A real `farm agent` process dialling this controller; returns once it said HELLO."""
        cache = cache or self.tmp_path / "agent-cache"
        cmd = [sys.executable, "-m", "farm", "--log-level", "warning", "agent", "--controller", self.url,
               "--slots", "1", "--parent-pid", str(os.getpid()), "--id", "victim", "--cache-dir", str(cache),
               *extra]
        self.procs.append(subprocess.Popen(cmd, env={**os.environ, **(env or {})}))
        wait_for(lambda: self.poll() or self.agent is not None, 60, "the agent's HELLO")

    @property
    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def poll(self, timeout_ms: int = 20) -> bool:
        """Handle what arrived; keep the agent's liveness fed. Returns False (for wait_for)."""
        if self.agent is not None and time.monotonic() - self.last_sent > 0.5:
            self.send(T.HEARTBEAT)
        while self.sock.poll(timeout_ms):
            identity, *frames = self.sock.recv_multipart()
            msg = unpack(frames)
            if msg.type is T.HELLO:
                self.agent, self.hello = identity, msg.body
                self.send(T.WELCOME, {"heartbeat": 0.5, "liveness": 20, "files": self.files.endpoint})
            elif msg.type is T.RESULTS:
                offset = 0
                for result in map(result_map, msg.body["results"]):
                    count = len(result["files"])
                    result["payloads"] = msg.payloads[offset:offset + count]
                    offset += count
                    self.results[result["lease"]] = result
            timeout_ms = 0
        return False

    def send(self, kind: T, body: dict[str, Any] | None = None) -> None:
        self.send_raw(pack(kind, body))

    def send_raw(self, frames: list[bytes]) -> None:
        assert self.agent is not None
        self.sock.send_multipart([self.agent, *frames])
        self.last_sent = time.monotonic()

    def publish(self, project: Project, tree: str) -> dict[str, Any]:
        """Publish a project's files as ``tree``; returns its description as a controller sends it."""
        manifest = build_manifest(project.root, list(project.assets()))
        self.files.publish(tree, project.root, manifest)
        return {**project.to_wire(), "assets": {"tree": tree, "manifest": manifest.id,
                                                "files": len(manifest.entries), "bytes": manifest.total_size}}

    def job(self, lease: str, key: str, project: str, *, timeout: float = 60.0,
            params: Any = None, deps: Any = None) -> dict[str, Any]:
        return {"lease": lease, "key": key, "project": project, "params": params or {}, "deps": deps or {},
                "timeout": timeout}

    def send_jobs(self, jobs: list[dict[str, Any]], projects: dict[str, Any] | None = None) -> None:
        """Jobs given by field name (as `job` makes them), sent as the arrays a controller sends."""
        self.send(T.JOBS, {"jobs": [list(job.values()) for job in jobs], "projects": projects or {}})

    def result(self, lease: str, timeout: float = 60.0) -> dict[str, Any]:
        def arrived() -> dict[str, Any] | None:
            self.poll()
            assert self.alive, "the agent process died"
            return self.results.get(lease)

        return wait_for(arrived, timeout, f"the result of {lease}")  # type: ignore[return-value]

    def close(self) -> None:
        stop_agents(self.procs)
        self.files.close()
        self.sock.close(0)


def synthetic_project(folder: Path, table: str, name: str = "honest") -> Project:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "farm.toml").write_text(
        f'[project]\nname = "{name}"\nmedia_type = "synthetic"\n\n[synthetic]\n{table}\n')
    return load_project(folder)

