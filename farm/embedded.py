"""The embedded farm: a controller in this process and local agent processes.

This is what ``farm submit DIR`` runs when no controller is given: the same controller,
agents and client as a farm of many machines, on this machine. It lives as long as the
`EmbeddedFarm` context, so ``--watch`` renders round after round on the same agents.

Its sockets are private: the controller's job socket and its file service are ``ipc://``
paths in a fresh folder of mode 0700, so only this user (and root) can reach them, and the
kernel checks that at ``connect``, before any byte is read. A loopback TCP port would be
open to every local user (see docs/security.md).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.client import Summary, submit
from farm.controller.server import Controller
from farm.project import STATE_DIR, Project, load_project

if TYPE_CHECKING:
    from farm.http.server import HttpServer

log = logging.getLogger(__name__)


def start_local_agents(url: str, count: int, *, slots: int = 1, log_level: str = "WARNING",
                       extra: list[str] | None = None, first: int = 1,
                       local_assets: bool = True) -> list[subprocess.Popen[bytes]]:
    """Start agent processes named local-<first>, ... that exit when this process does.

    With ``local_assets`` they use the project's files in place (``--local-assets``), without
    copying them into the cache. On an ``ipc://`` address (a private folder, as the embedded
    farm's) they use no keys, whatever ``$FARM_KEYS`` names: the folder's mode guards the socket,
    and a controller there asks for none."""
    env = None
    if url.partition("://")[0].lower() == "ipc":
        env = {k: v for k, v in os.environ.items() if k != "FARM_KEYS"}
    # -P: a folder named `farm` in the current folder must not shadow the installed package
    cmd = [sys.executable, "-P", "-m", "farm", "--log-level", log_level, "agent", "--controller", url,
           "--slots", str(slots), "--parent-pid", str(os.getpid()),
           *(["--local-assets"] if local_assets else []), *(extra or [])]
    return [subprocess.Popen([*cmd, "--id", f"local-{first + i}"], env=env) for i in range(count)]


def stop_agents(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# AF_UNIX paths hold 107 bytes; the file service's socket is the job socket's path + "-files"
_SOCKET_PATH_MAX = 100


def private_socket_dir() -> Path:
    """A new folder only this user can enter (mode 0700), short enough for ``ipc://`` paths."""
    folder = Path(tempfile.mkdtemp(prefix="farm-"))  # mkdtemp makes it 0700, atomically
    if len(str(folder / "jobs-files")) > _SOCKET_PATH_MAX:  # a long $TMPDIR
        folder.rmdir()
        folder = Path(tempfile.mkdtemp(prefix="farm-", dir="/tmp"))
    return folder


class EmbeddedFarm:
    """A controller (state in ``state_dir``) and ``agents`` local agent processes.

    They talk over ``ipc://`` sockets in a private folder (`private_socket_dir`), removed on exit.
    With ``ui``, the controller also serves the HTTP API and dashboard on loopback, behind a
    token of this session; `ui_url` is the address to open (docs/api-http.md).
    """

    def __init__(self, state_dir: Path, agents: int | None = None, *, ui: bool = False) -> None:
        self.sockets = private_socket_dir()
        self.ui_url: str | None = None  # with `ui`: the dashboard's address, its session token included
        http = _ui_server() if ui else None
        # the submitter is this user: its projects' webhooks go anywhere (farm.notify)
        self.controller = Controller(f"ipc://{self.sockets}/jobs", state_dir=state_dir, notify_allow=["*"],
                                     http=http)
        self.count = agents or os.cpu_count() or 1
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> EmbeddedFarm:
        try:
            self.controller.start()
        except BaseException:
            shutil.rmtree(self.sockets, ignore_errors=True)
            raise
        assert self.controller.url is not None
        if self.controller.http is not None:
            http = self.controller.http
            self.ui_url = f"{http.url}?access_token={http.access.session_token}"
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self.procs = start_local_agents(self.controller.url, self.count, log_level=level)
        # a closed farm: once these have all joined or exited, no other agent can come
        self.controller.local_agents = lambda: [proc.poll() for proc in self.procs]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.controller.stop(shutdown_agents=True)
            stop_agents(self.procs)
        finally:
            shutil.rmtree(self.sockets, ignore_errors=True)

    def submit(self, project: Project, *, priority: int = 0,
               on_update: Callable[[dict[str, Any]], None] | None = None) -> Summary:
        assert self.controller.url is not None
        return submit(self.controller.url, project, priority=priority, on_update=on_update)


def _ui_server() -> HttpServer:
    """The dashboard on loopback (port 8642, else any free one), behind a token of this session.

    A loopback port is open to every local user, unlike the farm's private sockets, so the
    API asks for a random token; the printed URL carries it, and the browser keeps it as a cookie.
    """
    from farm.http.server import DEFAULT_PORT, HttpServer  # FastAPI loads only for --ui

    return HttpServer("127.0.0.1", DEFAULT_PORT, session_token=secrets.token_urlsafe(24),
                      any_port_if_taken=True)


def submit_embedded(
    project_dir: Path | str,
    *,
    agents: int | None = None,
    output: str | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    priority: int = 0,
) -> Summary:
    """Render a project on an in-process controller with `agents` local agents (default: cores)."""
    project = load_project(project_dir, output=output)
    with EmbeddedFarm(project.root / STATE_DIR, agents) as farm:
        return farm.submit(project, priority=priority, on_update=on_update)
