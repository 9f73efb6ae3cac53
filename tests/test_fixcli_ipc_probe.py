"""`ipc://` controller addresses are probed as socket files (no "invalid literal for int()"), and
an agent that retries anyway says "nothing listens" as a warning, or (an embedded farm's agent,
whose controller is still binding) only at debug level; it connects once the controller is up."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

from farm.controller.server import Controller
from farm.embedded import private_socket_dir, stop_agents
from farm.handshake import MISSING, probe

FARM = [sys.executable, "-m", "farm"]


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A private folder short enough for AF_UNIX paths (tmp_path may not be)."""
    folder = private_socket_dir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_probe_tells_a_missing_a_stale_and_a_listening_socket_file(sockets):
    assert probe(f"ipc://{sockets}/nosock") == MISSING
    assert probe(f"ipc://{sockets}/no/such/folder/sock") == MISSING
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sockets / "stale"))  # bound, not listening: what a killed process leaves
        assert probe(f"ipc://{sockets}/stale") == "refused"
        stale.listen(1)
        assert probe(f"ipc://{sockets}/stale") == "open"
    (sockets / "plain").write_text("not a socket")
    assert probe(f"ipc://{sockets}/plain") not in ("open", MISSING)


@pytest.mark.parametrize("name, why", [
    ("nosock", "no such socket file"), ("gone/sock", "no such socket file"), ("stale", "connection refused")])
def test_status_at_an_ipc_address_where_nothing_listens_says_so(sockets, name, why):
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sockets / "stale"))
        url = f"ipc://{sockets}/{name}"
        for extra in ([], ["--json"]):
            done = subprocess.run([*FARM, "status", "--controller", url, *extra], capture_output=True,
                                  text=True, timeout=120)
            out = done.stdout + done.stderr
            assert done.returncode == 1 and "Traceback" not in out, out
            assert "invalid literal" not in out and "firewall" not in out, out
            assert f"nothing listens at {sockets}/{name} ({why})" in out, out


def _agent(url: str, log: Path, embedded: bool) -> subprocess.Popen[bytes]:
    """`farm agent`, or an embedded farm's agent as `farm.embedded.start_local_agents` starts it."""
    cmd = ([sys.executable, "-m", "farm.agent.local", url, "--log-level", "debug"] if embedded
           else [*FARM, "--log-level", "debug", "agent", "--controller", url])
    with open(log, "wb") as err:
        return subprocess.Popen([*cmd, "--slots", "1", "--id", "agent-0", "--parent-pid", str(os.getpid())],
                                stdout=subprocess.DEVNULL, stderr=err)


@pytest.mark.parametrize("embedded", [False, True])
def test_an_agent_before_its_controller_warns_or_keeps_quiet_then_connects(sockets, tmp_path, embedded):
    url = f"ipc://{sockets}/jobs"
    log = tmp_path / "agent.err"
    proc = _agent(url, log, embedded)
    controller = None
    try:
        wait_for(lambda: "nothing listens at" in log.read_text(), 120, "the agent to find nobody there")
        said = next(line for line in log.read_text().splitlines() if "nothing listens at" in line)
        assert f"nothing listens at {sockets}/jobs (no such socket file)" in said, said
        assert (" DEBUG " if embedded else " WARNING ") in said and "still trying" in said, said
        controller = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
        wait_for(lambda: controller.registry.by_id("agent-0"), 120, "the agent to connect after all")
        assert " ERROR " not in log.read_text(), log.read_text()
    finally:
        if controller is not None:
            controller.stop(shutdown_agents=True)
        stop_agents([proc])
