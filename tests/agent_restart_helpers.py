"""Helpers for the restarted-node tests: a link that goes silent as a powered-off node does, a
media type whose jobs wait at a gate, and `farm agent` processes that each keep a node's state."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

GATED = """
    import os
    import time

    from farm.hookspecs import hookimpl
    from farm.mediatype import Job, MediaType


    class Held(MediaType):
        name = "held"

        def configure(self, s):
            settings = {{"jobs": s.integer("jobs", 2)}}
            s.finish()
            return settings

        def split(self, project):
            for i in range(project.settings["jobs"]):
                yield Job(f"job-{{i}}")

        def render(self, job, ctx):
            # says it started (the test kills its agent then), and finishes once the gate is gone
            open(os.path.join({marks!r}, f"{{job.key}}.{{os.getpid()}}"), "w").close()
            while os.path.exists({gate!r}):
                time.sleep(0.02)
            return None


    @hookimpl
    def farm_register_media_types(register):
        register(Held)
"""


@dataclass
class Gate:
    """The `held` media type's gate (jobs wait while it exists) and the marks its jobs leave."""

    gate: Path
    marks: Path
    env: dict[str, str]  # an agent's environment: the plugin on PYTHONPATH

    def started(self) -> list[str]:
        """The keys of the jobs that began rendering, once per start."""
        return sorted(p.name.rsplit(".", 1)[0] for p in self.marks.iterdir())


def gated_plugin(folder: Path) -> Gate:
    """Install `held` (a name no other test installs: a media type is installed once per
    test process) for agents' processes (the controller in this process needs it too: see
    `control_helpers.installed_plugin`, which this calls), with its gate closed."""
    from control_helpers import installed_plugin

    gate, marks = folder / "gate", folder / "marks"
    marks.mkdir(parents=True)
    gate.touch()
    env = installed_plugin(folder / "site", "farm_held_test", GATED.format(marks=str(marks), gate=str(gate)),
                           "held")
    return Gate(gate, marks, env)


def gated_project(folder: Path, jobs: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "farm.toml").write_text(
        f'[project]\nname = "held"\nmedia_type = "held"\n[held]\njobs = {jobs}\n')
    return folder


class Nodes:
    """`farm agent` processes, each on a "node": a state folder of its own (its node token) and a cache."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = env or {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, url: str, agent_id: str, node: str) -> tuple[subprocess.Popen[bytes], Path]:
        """An agent of `node` (a folder name under root) as ``--id agent_id``; returns it and its log."""
        home = self.root / node
        home.mkdir(parents=True, exist_ok=True)
        log = home / f"agent-{len(self.procs)}.log"
        env = {**os.environ, **self.env, "XDG_STATE_HOME": str(home / "state")}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "farm", "--log-level", "info", "agent", "--controller", url,
                 "--id", agent_id, "--slots", "1", "--parent-pid", str(os.getpid()),
                 "--cache-dir", str(home / "cache")], stdout=out, stderr=out, env=env)
        self.procs.append(proc)
        return proc, log

    def stop(self) -> None:
        from farm.embedded import stop_agents

        stop_agents(self.procs)


class SilentLink:
    """A TCP relay to a controller (``tcp://127.0.0.1:PORT``) whose controller side outlives the
    agent side: when an agent's connection ends, the controller's stays open and hears nothing
    more, as from a node whose power was cut (no FIN, no RST; only a timeout can tell)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.peer: dict[socket.socket, socket.socket | None] = {}  # each end -> the other (None: gone)
        self.upstreams: set[socket.socket] = set()  # the controller-side ends
        self.silenced = 0  # controller-side connections whose agent side ended
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(0.05):
                sock = key.fileobj
                if sock is self.listener:
                    self._accept()
                    continue
                if sock not in self.peer:
                    continue  # closed earlier in this turn
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                other = self.peer.get(sock)
                if data and other is not None:
                    try:
                        other.sendall(data)
                        continue
                    except OSError:
                        self._end(other)
                        continue
                if data:
                    continue  # for a silenced end: read and dropped, as by a dead node's switch port
                self._end(sock)

    def _accept(self) -> None:
        agent, _ = self.listener.accept()
        upstream = socket.create_connection(self.target)
        self.upstreams.add(upstream)
        for sock, other in ((agent, upstream), (upstream, agent)):
            sock.setblocking(True)
            self.peer[sock] = other
            self.selector.register(sock, selectors.EVENT_READ)

    def _end(self, sock: socket.socket) -> None:
        """One end closed. The agent's: its controller side goes silent. The controller's: both go."""
        other = self.peer.pop(sock, None)
        self.upstreams.discard(sock)
        self.selector.unregister(sock)
        sock.close()
        if other is not None and other in self.upstreams:
            self.peer[other] = None
            self.silenced += 1
        elif other is not None:
            self._end(other)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for sock in [*self.peer, self.listener]:
            sock.close()
        self.selector.close()
