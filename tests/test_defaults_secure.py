"""Secure by default on a shared machine: another local user (`nobody`) gets nothing.

The embedded farm (`farm submit DIR`) talks over ipc:// sockets in a 0700 folder; a default
`farm controller` on loopback makes and uses CURVE keys, and the same user's agents and
clients find them. Each attack runs in a child process that has become the user nobody, and
each has a control: the same attempt as the owner gets an answer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from cli_helpers import FARM, Running, cli_controller
from conftest import restartable_url, write_project
from hostile_helpers import as_nobody
from zmq.utils.monitor import recv_monitor_message

from farm.cli.security import client_security, controller_security, remember_controller
from farm.client import submit
from farm.embedded import EmbeddedFarm
from farm.project import load_project
from farm.protocol import T, pack, unpack

LISTEN_S = 3.0  # how long an attacker listens for an answer that must not come

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="becoming the user nobody needs root")

HELLO = {
    "agent": "intruder",
    "host": "x",
    "pid": 1,
    "slots": 4,
    "prefetch": 0,
    "caps": ["synthetic"],
    "held": [],
    "version": "0",
}


def ask(url: str, curve: tuple[bytes, bytes, bytes] | None = None) -> dict[str, Any]:
    """Say STATUS and HELLO to `url` as a client or agent would; what came back within LISTEN_S."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if curve:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
    monitor = sock.get_monitor_socket()
    sock.connect(url)
    sock.send_multipart(pack(T.STATUS))
    sock.send_multipart(pack(T.HELLO, HELLO))
    got: list[str] = []
    events: list[int] = []
    deadline = time.monotonic() + LISTEN_S
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    while (left := deadline - time.monotonic()) > 0 and not {"STATUS_REPLY", "WELCOME"} <= set(got):
        ready = dict(poller.poll(int(left * 1000)))
        if ready.get(sock):
            got.append(unpack(sock.recv_multipart()).type.name)
        if ready.get(monitor):
            events.append(recv_monitor_message(monitor)["event"])
    sock.disable_monitor()
    monitor.close(linger=0)
    sock.close(linger=0)
    ctx.term()
    failed = (
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    )
    return {
        "got": got,
        "handshake_failed": any(e & failed for e in events),
        "handshake_ok": any(e & zmq.EVENT_HANDSHAKE_SUCCEEDED for e in events),
    }


def unix_connect(path: str) -> str:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return "connected"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()


def test_embedded_farm_sockets_are_closed_to_other_users(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", "synthetic", "jobs = 40\nsleep = 0.1")
    with EmbeddedFarm(tmp_path / "state", agents=1) as farm:
        url = farm.controller.url
        assert url is not None and url.startswith("ipc://")
        folder = Path(url[len("ipc://") :]).parent
        assert folder.stat().st_mode & 0o777 == 0o700
        files = farm.controller.assets.endpoint
        assert files.startswith(f"ipc://{folder}/")
        run: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: run.update(summary=farm.submit(load_project(project))))
        thread.start()  # jobs are waiting for agents while the intruder knocks

        paths = [url[len("ipc://") :], files[len("ipc://") :]]
        refused = as_nobody(
            lambda: {"unix": [unix_connect(p) for p in paths], "jobs": ask(url), "files": ask(files)}
        )
        assert refused["unix"] == ["PermissionError", "PermissionError"]
        assert refused["jobs"]["got"] == [] and refused["files"]["got"] == []

        control = ask(url)  # the owner, the same way: answered
        assert {"STATUS_REPLY", "WELCOME"} <= set(control["got"])
        thread.join(120)
    assert run["summary"].ok and run["summary"].done == 40
    assert not folder.exists()  # the private folder goes with the farm


@pytest.fixture
def keyed_controller(tmp_path: Path) -> Iterator[Running]:
    """A default `farm controller` on loopback, its user's config folder in tmp."""
    with cli_controller(tmp_path) as ctl:
        assert ctl.url.startswith("tcp://127.0.0.1:") and len(ctl.public_key) == 40
        yield ctl


def test_default_loopback_controller_refuses_other_users_and_serves_ours(keyed_controller, tmp_path) -> None:
    url, env, key, keys = (
        keyed_controller.url,
        keyed_controller.env,
        keyed_controller.public_key,
        keyed_controller.keys,
    )
    assert (keys / "controller.key_secret").stat().st_mode & 0o777 == 0o600
    assert keys.stat().st_mode & 0o777 == 0o700

    stranger = zmq.curve_keypair()
    refused = as_nobody(lambda: {"plain": ask(url), "curve": ask(url, (*stranger, key.encode()))})
    for attempt in refused.values():
        assert attempt["got"] == [] and attempt["handshake_failed"], attempt

    # this user's agent and client find the keys by themselves
    agent = subprocess.Popen([*FARM, "agent", "--controller", url, "--slots", "1"], env=env)
    try:
        project = write_project(tmp_path / "p", "synthetic", "jobs = 5\noutput_bytes = 4")
        done = subprocess.run(
            [*FARM, "submit", "--controller", url, "--json", str(project)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["jobs"]["done"] == 5
        status = subprocess.run(
            [*FARM, "status", "--json", "--controller", url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert status.returncode == 0, status.stderr
        assert len(json.loads(status.stdout)["agents"]) == 1
    finally:
        agent.terminate()
        agent.wait(30)

    elsewhere = {k: v for k, v in os.environ.items() if k != "FARM_KEYS"}  # a user with no keys at all
    elsewhere |= {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "home"),
        "FARM_CLIENT_TIMEOUT": "20",
    }
    plain = subprocess.run(
        [*FARM, "status", "--controller", url], capture_output=True, text=True, timeout=60, env=elsewhere
    )
    assert plain.returncode == 1 and "requires keys" in plain.stderr  # said, not a silent wait


def test_a_port_squatter_gets_no_agent(tmp_path: Path) -> None:
    """Our controller stopped and nobody took its port, as a CURVE server with keys of its own:
    our agent, started with the defaults, completes no handshake and says nothing to it."""
    with cli_controller(tmp_path) as ctl:
        url, env = ctl.url, ctl.env
    bound_r, bound_w = os.pipe()

    def squat() -> dict[str, Any]:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        monitor = sock.get_monitor_socket()
        sock.bind(url)
        os.write(bound_w, b"x")
        heard = bool(sock.poll(int(3 * LISTEN_S * 1000)))
        events = []
        while monitor.poll(0):
            events.append(recv_monitor_message(monitor)["event"])
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
        ctx.term()
        return {"heard": heard, "accepted": any(e & zmq.EVENT_ACCEPTED for e in events)}

    agent: list[subprocess.Popen[bytes]] = []

    def start_agent() -> None:
        os.read(bound_r, 1)  # the squatter holds the port
        agent.append(subprocess.Popen([*FARM, "agent", "--controller", url, "--slots", "1"], env=env))

    starter = threading.Thread(target=start_agent, daemon=True)
    starter.start()
    try:
        assert as_nobody(squat) == {"heard": False, "accepted": True}  # it dialled, and said nothing
    finally:
        starter.join(30)
        os.close(bound_r)
        os.close(bound_w)
        for a in agent:
            a.terminate()
            a.wait(30)


def test_insecure_controller_on_loopback_forgets_its_record(tmp_path: Path) -> None:
    """--insecure on an address a keyed controller used: no keys, and the same user's clients then
    dial it in plain text by default. The address is one outside the ephemeral range, so nothing
    else can take its port while neither controller runs."""
    with cli_controller(tmp_path, bind=restartable_url()) as keyed:
        assert keyed.public_key
    with cli_controller(tmp_path, "--insecure", bind=keyed.url) as plain:
        assert not plain.public_key
        status = subprocess.run(
            [*FARM, "status", "--json", "--controller", plain.url],
            capture_output=True,
            text=True,
            timeout=60,
            env=plain.env,
        )
    assert status.returncode == 0, status.stderr
    assert not list((plain.keys / "local").iterdir())


def test_library_submit_to_embedded_url_is_ipc(tmp_path: Path) -> None:
    """The library API keeps working over the private sockets (submit by URL, as the CLI does)."""
    project = write_project(tmp_path / "p", "synthetic", "jobs = 3")
    with EmbeddedFarm(tmp_path / "state", agents=1) as farm:
        assert farm.controller.url is not None
        summary = submit(farm.controller.url, load_project(project))
    assert summary.ok and summary.done == 3


def test_clients_find_a_local_controller_by_its_record(tmp_path: Path, monkeypatch) -> None:
    """The lookup itself: by address (localhost or 127.0.0.1), with our identity or the controller's."""
    monkeypatch.delenv("FARM_KEYS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    server = controller_security("tcp://127.0.0.1:5999", None, "controller", False)
    assert server is not None
    try:
        remember_controller(server.store, "tcp://127.0.0.1:5999", server)
        for url in ("tcp://127.0.0.1:5999", "tcp://localhost:5999"):
            client = client_security(url, None, "node", "controller", False)
            assert client is not None and client.server_key == server.keys.public
            assert client.keys.name == "controller"  # no "node" identity here: the controller's own pair
        server.store.create("node")  # a pair this controller does not allow (made for another)
        client = client_security("tcp://127.0.0.1:5999", None, "node", "controller", False)
        assert client is not None and client.keys.name == "controller"
        server.store.allow("node", role="agent")  # allowed here: our own identity is used
        client = client_security("tcp://127.0.0.1:5999", None, "node", "controller", False)
        assert client is not None and client.keys.name == "node"
        assert client_security("tcp://127.0.0.1:6000", None, "node", "controller", False) is None  # no record
        assert client_security("tcp://127.0.0.1:5999", None, "node", "controller", True) is None  # --insecure
        remember_controller(server.store, "tcp://127.0.0.1:5999", None)  # a plain controller took over
        assert client_security("tcp://127.0.0.1:5999", None, "node", "controller", False) is None
    finally:
        server.stop()
