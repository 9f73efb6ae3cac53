"""Shared fixtures: real controllers, real agent processes, projects in temp folders.

Tests wait on conditions (`wait_for`), never on sleeps, so they hold on a loaded machine.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from farm.client import submit
from farm.controller.server import Controller
from farm.embedded import stop_agents
from farm.project import load_project

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll `condition` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def write_project(folder: Path, media_type: str, table: str = "", extra: str = "", name: str = "test") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "farm.toml").write_text(
        f'[project]\nname = "{name}"\nmedia_type = "{media_type}"\n{textwrap.dedent(extra)}\n'
        f"[{media_type}]\n{textwrap.dedent(table)}\n"
    )
    return folder


class Background:
    """Run `submit` in a thread so the test can make trouble meanwhile."""

    def __init__(self, url: str, project: Path) -> None:
        self.summary = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(url, project), daemon=True)
        self.thread.start()

    def _run(self, url: str, project: Path) -> None:
        try:
            self.summary = submit(url, load_project(project))
        except BaseException as exc:
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()


def restartable_url() -> str:
    """``tcp://127.0.0.1:PORT`` for a controller a test starts at an address of its choosing (to
    start it again there, or to know it before the controller runs): PORT and PORT + 1 (its file
    service) are free now and below Linux's ephemeral range (32768-60999), so no outgoing
    connection (an agent or submitter reconnecting meanwhile) can be given either port while the
    controller is down. (Port 0 picks from that range, and a free PORT's + 1 may be taken.)"""
    for port in random.sample(range(20000, 32000, 2), 500):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return f"tcp://127.0.0.1:{port}"
        except OSError:
            continue
    raise RuntimeError("no free pair of loopback ports between 20000 and 32000")


@pytest.fixture(autouse=True, scope="session")
def private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Agents keep their node tokens (`farm.agent.nodetoken`) under $XDG_STATE_HOME: the tests' own."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture
def synthetic(tmp_path: Path) -> Callable[..., Path]:
    """Write a synthetic project: synthetic(jobs=10, sleep=0.0, ...) -> its folder."""
    counter = iter(range(1000))

    def make(extra: str = "", name: str = "synth", **settings: object) -> Path:
        lines = []
        for key, value in settings.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, list | str):
                lines.append(f"{key} = {json.dumps(value)}")
            else:
                lines.append(f"{key} = {value}")
        return write_project(tmp_path / f"project{next(counter)}", "synthetic", "\n".join(lines), extra, name)

    return make


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "controller-state", heartbeat=0.5, liveness=4)
    ctl.start()
    yield ctl
    ctl.stop(shutdown_agents=True)


@pytest.fixture
def agents() -> Iterator[Callable[..., list[subprocess.Popen[bytes]]]]:
    """Start real agent processes: agents(url, count, extra=[...], env={...})."""
    started: list[subprocess.Popen[bytes]] = []

    def start(url: str, count: int = 1, *, slots: int = 1, extra: list[str] | None = None,
              env: dict[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
        procs = []
        for _ in range(count):
            cmd = [sys.executable, "-m", "farm", "--log-level", "warning", "agent", "--controller", url,
                   "--slots", str(slots), "--parent-pid", str(os.getpid()), "--id",
                   f"agent-{len(started)}", *(extra or [])]
            started.append(subprocess.Popen(cmd, env={**os.environ, **(env or {})}))
            procs.append(started[-1])
        return procs

    yield start
    stop_agents(started)
