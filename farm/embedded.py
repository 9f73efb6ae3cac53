"""The embedded farm: a controller in this process and local agent processes.

This is what ``farm submit DIR`` runs when no controller is given: the same controller,
agents and client as a farm of many machines, on this machine. It lives as long as the
`EmbeddedFarm` context, so ``--watch`` renders round after round on the same agents.

Its sockets are private: the controller's job socket and its file service are ``ipc://``
paths in a fresh folder of mode 0700, so only this user (and root) can reach them, and the
kernel checks that at ``connect``, before any byte is read. A loopback TCP port would be
open to every local user (see docs/security.md).

Start-up is on the user's clock (`bench/bench_startup.py`): the agents are started first,
before the controller and (from `submit_embedded` and ``farm submit``) before the project is
loaded and checked, since a Python process takes most of a second to start and join; they
connect to the socket's path and ZeroMQ retries until the controller binds it. They offer
only the project's media type (``--media-type``), so they neither import nor probe the
other plugins.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.client import Summary, submit
from farm.controller.intake import Refusing, check_output, check_owned
from farm.controller.server import Controller
from farm.errors import ConnectionLost, FarmError, ProjectError
from farm.linkcheck import refuse_links
from farm.project import PROJECT_FILE, STATE_DIR, Project, load_project
from farm.tomltext import parse_toml
from farm.trace import mark

if TYPE_CHECKING:
    from farm.http.server import HttpServer

log = logging.getLogger(__name__)


def start_local_agents(url: str, count: int, *, slots: int = 1, log_level: str = "WARNING",
                       extra: list[str] | None = None, first: int = 1, local_assets: bool = True,
                       own_session: bool = False) -> list[subprocess.Popen[bytes]]:
    """Start agent processes named local-<first>, ... that exit when this process does.

    With ``local_assets`` they use the project's files in place (``--local-assets``), without
    copying them into the cache. On an ``ipc://`` address (a private folder, as the embedded
    farm's) they use no keys, whatever ``$FARM_KEYS`` names: the folder's mode guards the socket,
    and a controller there asks for none; they start through `farm.agent.local`, which skips the
    command line's start-up. ``extra``: more options of that (or, elsewhere, of `farm agent`).
    Their standard output goes to our standard error: what a render prints (a plugin, a program it
    starts) is said there, and never lands in `farm submit --json`'s one object. With ``own_session``
    they run in a session of their own: a terminal's Ctrl-C reaches only this process, which stops
    them (the embedded farm's deliberate shutdown), rather than each of them leaving on its own,
    mid-job, which the controller would report as a fault."""
    env = None
    # -P: a folder named `farm` in the current folder must not shadow the installed package
    if url.partition("://")[0].lower() == "ipc":
        env = {k: v for k, v in os.environ.items() if k != "FARM_KEYS"}
        cmd = [sys.executable, "-P", "-m", "farm.agent.local", url, "--log-level", log_level]
    else:
        cmd = [sys.executable, "-P", "-m", "farm", "--log-level", log_level, "agent", "--controller", url]
    cmd += ["--slots", str(slots), "--parent-pid", str(os.getpid()),
            *(["--local-assets"] if local_assets else []), *(extra or [])]
    # stdout: our file descriptor 2, which sys.stderr may not expose (a test's capture)
    return [subprocess.Popen([*cmd, "--id", f"local-{first + i}"], env=env, stdout=2,
                             start_new_session=own_session) for i in range(count)]


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


class LocalAgents:
    """``count`` local agent processes (default: one per core) for an embedded farm, and the
    private folder (`private_socket_dir`) whose ``jobs`` socket they connect to: `url`.

    They can be started before the controller that binds `url` exists. With ``media_types``
    they offer only those (``farm agent --media-type``); otherwise every installed one.
    """

    def __init__(self, count: int | None = None, media_types: Sequence[str] | None = None) -> None:
        self.sockets = private_socket_dir()
        self.url = f"ipc://{self.sockets}/jobs"
        self.count = count or os.cpu_count() or 1
        self.media_types = sorted(set(media_types)) if media_types else None
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> LocalAgents:
        if not self.procs:
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
            offer = [arg for name in self.media_types or () for arg in ("--media-type", name)]
            self.procs = start_local_agents(self.url, self.count, log_level=level, extra=offer,
                                            own_session=True)
            mark("embedded: agents started")
        return self

    def offers(self, media_type: str) -> bool:
        return self.media_types is None or media_type in self.media_types

    def stop(self) -> None:
        try:
            stop_agents(self.procs)
        finally:
            shutil.rmtree(self.sockets, ignore_errors=True)


EMBEDDED = Refusing(user="you", refuser="farm submit", hint="copy the project into a folder of yours "
                    f"(the embedded farm keeps its state in {STATE_DIR}/ in the project folder)")
# an output folder the controller would refuse: said here, with what this user can do about it
EMBEDDED_OUTPUT = Refusing(user="you", refuser="farm submit", hint="make it a folder of yours that nobody "
                           "else can write (chmod go-w; a mount point will do, a symlink will not), or name "
                           "another in farm.toml's [output] directory")


class EmbeddedFarm:
    """A controller (state in ``state_dir``) and ``agents`` local agent processes.

    They talk over ``ipc://`` sockets in a private folder (`private_socket_dir`), removed on exit.
    With ``ui``, the controller also serves the HTTP API and dashboard on loopback, behind a
    token of this session; `ui_url` is the address to open (docs/api-http.md).
    The agents (`LocalAgents`: ``local`` if given, already started or not, else new ones offering
    ``media_types``, default all) start here, before the controller.
    """

    def __init__(self, state_dir: Path, agents: int | None = None, *, ui: bool = False,
                 media_types: Sequence[str] | None = None, local: LocalAgents | None = None) -> None:
        self.local = (local or LocalAgents(agents, media_types)).start()
        self.sockets = self.local.sockets
        self.ui_url: str | None = None  # with `ui`: the dashboard's address, its session token included
        try:  # its journal, logs and lock are written there: never through a link (farm.linkcheck)
            check_owned(str(state_dir.parent), EMBEDDED)  # not ours: refused before .farm/ is made
            refuse_links(state_dir.parent, state_dir.name, "the embedded farm's state folder")
            http = _ui_server() if ui else None
            # the submitter is this user: its projects' webhooks go anywhere (farm.notify)
            self.controller = Controller(self.local.url, state_dir=state_dir, notify_allow=["*"], http=http)
            self.controller.ends_with_submitter = True  # its runs' messages name what `farm submit` prints
        except BaseException:
            self.local.stop()
            raise
        self.count = self.local.count
        self.procs = self.local.procs

    def __enter__(self) -> EmbeddedFarm:
        try:
            self.controller.start()
        except BaseException:
            self.local.stop()
            raise
        mark("embedded: controller listening")
        assert self.controller.url is not None
        if self.controller.http is not None:
            http = self.controller.http
            self.ui_url = f"{http.url}?access_token={http.access.session_token}"
        # a closed farm: once these have all joined or exited, no other agent can come
        self.controller.local_agents = lambda: [proc.poll() for proc in self.procs]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.controller.stop(shutdown_agents=True)
            mark("embedded: controller stopped")
        finally:
            self.local.stop()
            mark("embedded: agents stopped")

    def submit(self, project: Project, *, priority: int = 0,
               on_update: Callable[[dict[str, Any]], None] | None = None) -> Summary:
        assert self.controller.url is not None
        check_output(project.root, project.output, EMBEDDED_OUTPUT)  # the controller's words say "upload it"
        try:
            return submit(self.controller.url, project, priority=priority, on_update=on_update)
        except ConnectionLost:
            crash = self.controller.crash  # the real cause, not the silence it left
            if crash is None:
                raise
            raise FarmError(f"the embedded controller stopped: {crash}") from crash


def peek_media_type(project_dir: Path | str) -> str | None:
    """The media type the project's farm.toml names, read without checking anything else, or
    None if it cannot be read: `load_project` reports the problem. Lets the agents start while
    the project loads."""
    file = Path(project_dir) / PROJECT_FILE
    try:
        name = parse_toml(file.read_text(encoding="utf-8", errors="replace"), file).get("project", {}).get("media_type")
    except (OSError, ProjectError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def early_agents(project_dir: Path | str, agents: int | None) -> LocalAgents | None:
    """Local agents for the project in ``project_dir``, started now, offering its media type;
    None where farm.toml does not say one (they then start with the farm, offering all)."""
    media_type = peek_media_type(project_dir)
    return LocalAgents(agents, [media_type]).start() if media_type else None


def _ui_server() -> HttpServer:
    """The dashboard on loopback (port 8642, else any free one), behind a token of this session.

    A loopback port is open to every local user, unlike the farm's private sockets, so the
    API asks for a random token; the printed URL carries it, and the page keeps it in its own
    storage (`farm.http.guard`).
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
    project, local = load_starting_agents(project_dir, output=output, agents=agents)
    with EmbeddedFarm(project.root / STATE_DIR, agents, local=local) as farm:
        return farm.submit(project, priority=priority, on_update=on_update)


def load_starting_agents(project_dir: Path | str, *, output: str | None = None,
                         agents: int | None = None) -> tuple[Project, LocalAgents]:
    """`load_project` while ``agents`` local agents for its media type start (`early_agents`);
    they are stopped if the project does not load. Returns the project and its started agents."""
    local = early_agents(project_dir, agents)
    try:
        project = load_project(project_dir, output=output)
    except BaseException:
        if local is not None:
            local.stop()
        raise
    return project, offering(local, project, agents)


def offering(local: LocalAgents | None, project: Project, agents: int | None) -> LocalAgents:
    """``local`` if its agents offer the project's media type, else ``agents`` new ones that do."""
    if local is not None and local.offers(project.media_type):
        return local
    if local is not None:  # farm.toml named another media type than the loaded project has
        local.stop()
    return LocalAgents(agents, [project.media_type]).start()
