"""`farm controller --http` on loopback: a loopback port is open to every local user, so the API
asks them all for a token, the owner included; the owner gets one, printed once with the
dashboard's address. Another user (nobody, where the tests run as root) gets 401s and changes
nothing."""

from __future__ import annotations

import encodings.idna  # noqa: F401  (loaded here: nobody cannot read the standard library)
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from hostile_helpers import as_nobody

from farm.embedded import stop_agents

FARM = [sys.executable, "-m", "farm"]
READS = ["/api/v1/projects", "/api/v1/agents", "/metrics", "/api/v1/events", "/api/v1/projects/r/jobs/k/log"]
CONTROLS = [("POST", "/api/v1/agents/{agent}/drain"), ("POST", "/api/v1/projects/r/pause"),
            ("PATCH", "/api/v1/projects/r")]


def call(method: str, url: str, token: str | None = None, body: bytes | None = None) -> int:
    """The status of one request, as curl would send it (urllib: nothing in between)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def attack(base: str, agent: str) -> list[int]:
    """What another local user gets: every read and control action without a token."""
    statuses = [call("GET", base + path) for path in READS]
    body = json.dumps({"priority": 9}).encode()
    return statuses + [call(method, base + path.format(agent=agent), body=body) for method, path in CONTROLS]


@pytest.fixture
def cli_http(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str], list[str]]]:
    """`farm controller --http 127.0.0.1:0` as a user runs it: (its job URL, its HTTP address,
    its environment, what it says on stderr: a list that grows)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    command = [*FARM, "controller", "--bind", "tcp://127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
               "--http", "127.0.0.1:0", "--no-announce"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stderr or ()), daemon=True)  # never blocks us
    reader.start()
    try:
        printed = lambda what: next((line for line in said if what in line), "")  # noqa: E731
        wait_for(lambda: printed("HTTP API and dashboard on "), 30, "the HTTP API's address printed")
        url = printed("controller listening on ").split("listening on ")[1].strip()
        base = printed("HTTP API and dashboard on ").split(" on ")[1].strip().rstrip("/")
        yield url, base, env, said
    finally:
        proc.terminate()
        proc.wait(30)
        reader.join(30)
        proc.stderr.close()


def test_a_loopback_http_api_needs_the_printed_token(cli_http, tmp_path: Path):
    url, base, env, said = cli_http
    assert base.startswith("http://127.0.0.1:"), base
    agent = subprocess.Popen([*FARM, "--log-level", "warning", "agent", "--controller", url, "--slots", "1",
                              "--id", "agent-0", "--parent-pid", str(os.getpid())], env=env)
    try:
        assert as_nobody(attack, base, "agent-0") == [401] * (len(READS) + len(CONTROLS))
        assert attack(base, "agent-0") == [401] * (len(READS) + len(CONTROLS))  # the owner without it too
        line = wait_for(lambda: next((line for line in said if "dashboard (" in line), ""), 10,
                        "the dashboard's address, with its token, printed")
        dashboard = str(line).rsplit(" ", 1)[1].strip()
        assert dashboard.startswith(base + "/?access_token="), dashboard
        token = dashboard.partition("?access_token=")[2]
        assert len(token) >= 32 and sum(token in line for line in said) == 1  # printed once
        for found in (tmp_path / "config").rglob("*"):  # and kept in no file
            assert not found.is_file() or token not in found.read_text(errors="replace"), found
        agents = base + "/api/v1/agents"
        wait_for(lambda: _agent_state(agents, token) == "active", 60, "the agent joined")
        assert attack(base, "agent-0") == [401] * (len(READS) + len(CONTROLS))
        assert _agent_state(agents, token) == "active"  # the drains did nothing
        for path in READS[:3]:
            assert call("GET", base + path, token) == 200, path
        assert call("GET", base + "/", None) == 200  # the page itself is code: it then asks for the token
        assert call("POST", agents + "/agent-0/drain", token, b"{}") == 200
        assert _agent_state(agents, token) == "draining"
    finally:
        stop_agents([agent])


def _agent_state(url: str, token: str) -> str | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        rows = json.loads(response.read())["agents"]
    return rows[0]["state"] if rows else None
