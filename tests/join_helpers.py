"""Real `farm controller` / `farm agent` processes for the join, handshake and discovery tests.

Their stderr goes to a file the test reads while they run (a pipe nobody drains could fill up).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conftest import wait_for

FARM = [sys.executable, "-m", "farm"]
ENV = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}


@dataclass
class Proc:
    """A farm process and the file its stderr goes to."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_line(self, needle: str, timeout: float = 60) -> str:
        """The first line holding `needle` (fails if the process exits first or time runs out)."""

        def line() -> str | None:
            for row in self.text().splitlines():
                if needle in row:
                    return row
            if self.proc.poll() is not None:
                raise AssertionError(f"exited ({self.proc.returncode}) before printing {needle!r}:\n{self.text()}")
            return None

        return str(wait_for(line, timeout, f"{needle!r} in {self.log.name}"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Farm:
    """Processes started by a test, stopped at its end."""

    folder: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, *args: str, prefix: list[str] | None = None) -> Proc:
        log = self.folder / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*(prefix or []), *FARM, "--log-level", "info", *args], stderr=out,
                                    stdout=subprocess.DEVNULL, env=ENV)
        self.procs.append(Proc(proc, log))
        return self.procs[-1]

    def controller(self, *args: str, prefix: list[str] | None = None, keys: str = "ctl",
                   bind: str = "tcp://127.0.0.1:0", invite: bool = True) -> tuple[Proc, str, str | None]:
        """(process, url, the join argument it printed: None when it printed none) of `farm controller`.

        It prints one with --invite (`invite`), or beyond loopback while no key is allowed in its keys
        folder."""
        proc = self.start(f"controller-{len(self.procs)}", "controller", "--bind", bind, "--keys-dir",
                          str(self.folder / keys), "--state-dir", str(self.folder / f"state-{len(self.procs)}"),
                          *(["--invite"] if invite else []), *args, prefix=prefix)
        url = proc.wait_line("controller listening on ").split("listening on ")[1].strip()
        if "run there" not in proc.wait_line("to add a render node"):
            return proc, url, None
        command = proc.wait_line("farm agent --join ").strip()
        return proc, url, shlex.split(command)[3]

    def agent(self, name: str, *args: str, prefix: list[str] | None = None) -> Proc:
        return self.start(name, "agent", "--keys-dir", str(self.folder / f"keys-{name}"), "--id", name,
                          "--slots", "1", "--parent-pid", str(os.getpid()), *args, prefix=prefix)

    def run(self, *args: str, prefix: list[str] | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*(prefix or []), *FARM, *args], capture_output=True, text=True, timeout=timeout,
                              env={**ENV, **(env or {})})

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@contextlib.contextmanager
def farm_processes(folder: Path) -> Iterator[Farm]:
    farm = Farm(folder)
    try:
        yield farm
    finally:
        farm.stop()
