"""CURVE + ZAP with real sockets on 127.0.0.1, the keys folder, `farm keys`, and a real secured farm.

Refusals are proven, not assumed from silence: the server's socket monitor reports the failed
handshake, and a control client with an allowed key gets through the same server afterwards.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from conftest import wait_for
from typer.testing import CliRunner
from zmq.utils.monitor import recv_monitor_message

from farm.agent.agent import Agent
from farm.cli.keys import app as keys_app
from farm.client import Client
from farm.controller.server import Controller
from farm.project import load_project
from farm.security import (
    ClientSecurity,
    KeyFileError,
    KeyStore,
    SecurityError,
    ServerSecurity,
    authenticated_id,
    client_security_for,
    default_keys_dir,
    requires_security,
    server_security_for,
)

TIMEOUT_MS = 10_000  # generous: the machine is loaded; nothing waits this long unless it fails
FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    keys = KeyStore(tmp_path / "keys")
    for name in ("controller", "agent", "agent2", "stranger"):
        keys.create(name)
    keys.allow("agent")
    keys.allow("agent2")
    return keys


@pytest.fixture
def security(store: KeyStore) -> Iterator[ServerSecurity]:
    server = ServerSecurity(store.root)
    yield server
    server.stop()


@pytest.fixture
def sockets() -> Iterator[list[zmq.Socket]]:
    made: list[zmq.Socket] = []
    yield made
    for sock in made:
        sock.close(linger=0)


@pytest.fixture
def serve(security: ServerSecurity, sockets: list[zmq.Socket]) -> tuple[zmq.Socket, str, zmq.Socket]:
    """A CURVE ROUTER on a random loopback port: (socket, url, its monitor)."""
    ctx = zmq.Context.instance()
    server = ctx.socket(zmq.ROUTER)
    sockets.append(server)
    security.socket_setup(server)
    # A handshake whose ZAP request went to an authenticator that was stopping waits this long to fail.
    server.handshake_ivl = 3000
    monitor = ctx.socket(zmq.PAIR)
    sockets.append(monitor)
    address = f"inproc://monitor-{uuid.uuid4().hex}"
    server.monitor(address, zmq.EVENT_HANDSHAKE_SUCCEEDED | FAILED)
    monitor.connect(address)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    return server, f"tcp://127.0.0.1:{port}", monitor


def dealer(sockets: list[zmq.Socket], url: str, setup: Callable[[zmq.Socket], None] | None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sockets.append(sock)
    if setup is not None:
        setup(sock)
    sock.connect(url)
    return sock


def client_of(store: KeyStore, name: str, server_key: str | bytes = "controller") -> ClientSecurity:
    return ClientSecurity(store.root, name, server_key)


def next_event(monitor: zmq.Socket) -> int:
    assert monitor.poll(TIMEOUT_MS), "the server's monitor reported nothing"
    return recv_monitor_message(monitor)["event"]


def wait_refused(monitor: zmq.Socket) -> int:
    """Wait for a failed handshake on the server; returns the event."""
    while True:
        event = next_event(monitor)
        assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, "a handshake that should fail succeeded"
        if event & FAILED:
            return event


def receive(sock: zmq.Socket) -> list[zmq.Frame]:
    assert sock.poll(TIMEOUT_MS), "nothing arrived"
    return sock.recv_multipart(copy=False)


def assert_only_control_gets_through(store: KeyStore, server: zmq.Socket, url: str,
                                     sockets: list[zmq.Socket]) -> None:
    """An allowed client reaches the same server; the refused peer's message never arrived."""
    control = dealer(sockets, url, client_of(store, "agent2").socket_setup)
    control.send(b"control")
    frames = receive(server)
    assert frames[1].bytes == b"control"
    assert authenticated_id(frames[1]) == store.load("agent2").public.decode()
    assert not server.poll(0)


# -- sockets ------------------------------------------------------------------------


def test_an_allowed_key_talks_both_ways_and_is_known_by_its_public_key(store, security, serve, sockets):
    server, url, monitor = serve
    agent = dealer(sockets, url, client_of(store, "agent").socket_setup)
    agent.send_multipart([b"hello", b"world"])
    frames = receive(server)
    assert [f.bytes for f in frames[1:]] == [b"hello", b"world"]
    user = authenticated_id(frames[1])
    assert user == store.load("agent").public.decode()
    assert authenticated_id(frames[0]) == user  # every frame carries it, the routing id too
    assert security.allows(user) and security.name_of(user) == "agent"
    server.send_multipart([frames[0].bytes, b"welcome"])
    assert agent.poll(TIMEOUT_MS) and agent.recv() == b"welcome"
    assert next_event(monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED


def test_the_claimed_identity_does_not_change_the_authenticated_one(store, security, serve, sockets):
    server, url, _ = serve
    impostor = zmq.Context.instance().socket(zmq.DEALER)
    sockets.append(impostor)
    impostor.setsockopt(zmq.IDENTITY, b"agent2")
    client_of(store, "agent").socket_setup(impostor)
    impostor.connect(url)
    impostor.send(b"I am agent2")
    frames = receive(server)
    assert frames[0].bytes == b"agent2"
    assert security.name_of(authenticated_id(frames[1])) == "agent"


def test_an_unlisted_key_is_refused(store, security, serve, sockets):
    server, url, monitor = serve
    stranger = dealer(sockets, url, client_of(store, "stranger").socket_setup)
    stranger.send(b"let me in")
    assert wait_refused(monitor) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    assert security.refusals >= 1
    assert_only_control_gets_through(store, server, url, sockets)


def test_a_client_with_the_wrong_server_key_is_refused(store, security, serve, sockets):
    server, url, monitor = serve
    lost = dealer(sockets, url, client_of(store, "agent", store.load("stranger").public).socket_setup)
    lost.send(b"hello?")
    wait_refused(monitor)
    assert_only_control_gets_through(store, server, url, sockets)


def test_a_plain_text_client_cannot_talk_to_a_curve_server(store, security, serve, sockets):
    server, url, monitor = serve
    plain = dealer(sockets, url, None)
    plain.send(b"in the clear")
    assert wait_refused(monitor) == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    assert_only_control_gets_through(store, server, url, sockets)


def test_revoke_and_reload_refuse_a_key_that_was_allowed(store, security, serve, sockets):
    server, url, monitor = serve
    before = dealer(sockets, url, client_of(store, "agent").socket_setup)
    before.send(b"while allowed")
    user = authenticated_id(receive(server)[1])
    assert next_event(monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED

    store.revoke("agent")
    assert security.reload() == ["agent2"]
    assert not security.allows(user)  # how the controller drops a live peer after a revoke
    after = dealer(sockets, url, client_of(store, "agent").socket_setup)
    after.send(b"after the revoke")
    assert wait_refused(monitor) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    assert_only_control_gets_through(store, server, url, sockets)


def test_a_key_allowed_while_the_server_runs_gets_in_without_a_restart(store, security, serve, sockets):
    server, url, monitor = serve
    first = dealer(sockets, url, client_of(store, "stranger").socket_setup)
    first.send(b"not yet")
    assert wait_refused(monitor) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    first.close(linger=0)  # its queued message must not arrive through a later retry
    store.allow("stranger")  # `farm keys allow`, with no reload() call
    second = dealer(sockets, url, client_of(store, "stranger").socket_setup)
    second.send(b"now")
    frames = receive(server)
    assert frames[1].bytes == b"now"
    assert security.name_of(authenticated_id(frames[1])) == "stranger"


def test_a_stopped_authenticator_refuses_everyone(store, security, serve, sockets):
    server, url, monitor = serve
    security.stop()
    agent = dealer(sockets, url, client_of(store, "agent").socket_setup)
    agent.send(b"no gatekeeper")
    wait_refused(monitor)
    assert not server.poll(0)
    another = zmq.Context.instance().socket(zmq.ROUTER)
    sockets.append(another)
    with pytest.raises(SecurityError, match="stopped"):
        security.socket_setup(another)


def test_one_authenticator_per_context_and_sockets_must_share_it(store, security, sockets):
    with pytest.raises(SecurityError, match="already runs"):
        ServerSecurity(store.root)
    other = zmq.Context()
    try:
        sock = other.socket(zmq.ROUTER)
        with pytest.raises(SecurityError, match="another ZeroMQ context"):
            security.socket_setup(sock)
        sock.close(linger=0)
    finally:
        other.term()


def test_a_plain_socket_has_no_authenticated_id(sockets):
    ctx = zmq.Context.instance()
    server = ctx.socket(zmq.ROUTER)
    sockets.append(server)
    url = f"tcp://127.0.0.1:{server.bind_to_random_port('tcp://127.0.0.1')}"
    dealer(sockets, url, None).send(b"plain")
    assert authenticated_id(receive(server)[1]) is None


@pytest.mark.parametrize(
    ("url", "needed"),
    [
        ("tcp://127.0.0.1:5555", False),
        ("tcp://127.3.2.1:0", False),
        ("tcp://localhost:5555", False),
        ("tcp://[::1]:5555", False),
        ("tcp://[::ffff:127.0.0.1]:5555", False),
        ("tcp://lo:5555", False),
        ("ipc:///tmp/farm.sock", False),
        ("inproc://farm", False),
        ("tcp://0.0.0.0:5555", True),
        ("tcp://*:5555", True),
        ("tcp://[::]:5555", True),
        ("tcp://192.168.1.10:5555", True),
        ("tcp://10.0.0.1:0", True),
        ("tcp://ctl-host:5555", True),
        ("tcp://eth0:5555", True),
        ("tcp://localhost.example.com:5555", True),
        ("epgm://eth0;239.192.1.1:5555", True),
        ("127.0.0.1:5555", True),
    ],
)
def test_requires_security(url, needed):
    assert requires_security(url) is needed


def test_the_policy_keys_beyond_loopback_unless_insecure(store, tmp_path, monkeypatch):
    monkeypatch.setenv("FARM_KEYS", str(tmp_path / "no-keys-here"))
    assert server_security_for("tcp://127.0.0.1:0") is None
    assert server_security_for("tcp://0.0.0.0:0", insecure=True) is None
    expected = (r"tcp://0.0.0.0:0 is reachable from other machines, so the controller needs keys: "
                r".*no-keys-here/controller.key_secret: no secret key 'controller'; "
                r"create one with `farm keys create controller` \(or pass --insecure")
    with pytest.raises(SecurityError, match=expected):
        server_security_for("tcp://0.0.0.0:0")
    secured = server_security_for("tcp://127.0.0.1:0", store.root)  # keys asked for on loopback: used
    assert secured is not None
    secured.stop()

    assert client_security_for("tcp://localhost:5555") is None
    assert client_security_for("tcp://ctl-host:5555", insecure=True) is None
    with pytest.raises(KeyFileError, match="no secret key 'node'"):
        client_security_for("tcp://ctl-host:5555")
    monkeypatch.setenv("FARM_KEYS", str(store.root))
    client = client_security_for("tcp://ctl-host:5555", name="agent")
    assert client is not None and client.server_key == store.load("controller").public


# -- the keys folder ------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_writes_private_files_and_refuses_to_overwrite(tmp_path):
    keys = KeyStore(tmp_path / "fresh" / "keys")
    pair = keys.create("node")
    assert mode(keys.secret_path("node")) == 0o600
    assert mode(keys.root) == 0o700 and mode(keys.allowed_dir) == 0o700
    assert b"secret-key" not in keys.public_path("node").read_bytes()
    assert keys.public_key("node") == pair.public == zmq.curve_public(pair.secret)
    assert [p.name for p in keys.root.iterdir() if p.name.startswith(".")] == []  # no temp leftovers
    with pytest.raises(KeyFileError, match=r"node\.key: key 'node' exists already \(use --force"):
        keys.create("node")
    assert keys.create("node", force=True).public != pair.public


def test_default_keys_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("FARM_KEYS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_keys_dir() == tmp_path / "cfg" / "farm" / "keys"
    monkeypatch.setenv("FARM_KEYS", str(tmp_path / "elsewhere"))
    assert default_keys_dir() == tmp_path / "elsewhere"
    assert KeyStore().root == tmp_path / "elsewhere"


def test_a_secret_readable_by_others_is_refused(store):
    path = store.secret_path("agent")
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match=rf"{path}: secret key file is open to group or others "
                                           rf"\(mode 0640\); run `chmod 600 {path}`"):
        ClientSecurity(store.root, "agent")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.unlink(), "no secret key 'agent' .only its public key is here.; create one with "
                               "`farm keys create agent`"),
        (lambda p: (p.unlink(), p.mkdir()), "cannot read it"),
        (lambda p: p.write_text("hello\n"), "not a key file: it has no public-key line"),
        (lambda p: p.write_text('curve\n    public-key = "short"\n    secret-key = "x"\n'),
         "malformed public key"),
        (lambda p: p.write_text(f'curve\n    public-key = "{"a" * 40}"\n'),
         r"has no secret-key line \(is it a public key file\?\)"),
        (lambda p: p.write_text(f'curve\n    public-key = "{"a" * 40}"\n    secret-key = "{"b" * 40}"\n'),
         "its public and secret keys do not belong together"),
    ],
)
def test_broken_secret_files_are_named_in_the_error(store, damage, message):
    path = store.secret_path("agent")
    damage(path)
    if path.is_file():
        path.chmod(0o600)
    with pytest.raises(KeyFileError, match=message) as caught:
        store.load("agent")
    assert str(caught.value).startswith(f"{path}: ")


def test_a_public_key_that_does_not_match_its_secret_is_refused(store):
    store.public_path("agent").write_bytes(store.public_path("stranger").read_bytes())
    expected = r"agent\.key: does not match the public key in .*agent\.key_secret"
    with pytest.raises(KeyFileError, match=expected):
        store.load("agent")


def test_a_malformed_allowed_key_stops_the_server_naming_the_file(store):
    bad = store.allowed_dir / "broken.key"
    bad.write_text("not a certificate\n")
    with pytest.raises(KeyFileError, match=rf"{bad}: not a key file"):
        ServerSecurity(store.root)


def test_allow_from_a_file_a_name_or_a_bare_key(store, tmp_path):
    stranger = store.load("stranger").public
    copied = tmp_path / "render-07.key"
    copied.write_bytes(store.public_path("stranger").read_bytes())
    assert store.allow(copied) == ("render-07", stranger)
    assert store.allow(stranger.decode(), name="bare") == ("bare", stranger)
    with pytest.raises(SecurityError, match="a bare key needs a name"):
        store.allow(stranger.decode())
    assert store.allow("render-07") == ("render-07", stranger)  # the same key again: nothing to do
    with pytest.raises(KeyFileError, match="a different key is stored as 'render-07'"):
        store.allow(store.public_path("agent"), name="render-07")
    # a secret file offered by mistake: only its public half is copied
    store.allow(store.secret_path("agent"), name="from-secret")
    assert b"secret-key" not in store.allowed_path("from-secret").read_bytes()
    assert set(store.allowed()) == {"agent", "agent2", "render-07", "bare", "from-secret"}
    with pytest.raises(SecurityError, match="'nobody' is not a key file"):
        store.allow("nobody")
    with pytest.raises(SecurityError, match="bad key name"):
        store.allow(stranger.decode(), name="../escape")


# -- `farm keys` ----------------------------------------------------------------------


def keys(command: str, *args: str, root: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(keys_app, [command, "--keys-dir", str(root), *args])
    return result.exit_code, result.stdout, result.stderr


def test_keys_cli_from_create_to_revoke(tmp_path):
    ctl, node = tmp_path / "controller-host", tmp_path / "node-host"
    code, out, err = keys("create", "controller", root=ctl)
    assert code == 0 and "controller.key_secret" in err
    controller_key = out.strip()
    assert keys("show", "controller", root=ctl)[1].strip() == controller_key
    assert keys("create", "controller", root=ctl)[0] == 1

    assert keys("create", "node", root=node)[0] == 0
    # a Z85 key may begin with "-": after "--" it is never read as an option (1 key in 85 would be)
    assert keys("import", "--", "controller", controller_key, root=node)[0] == 0
    node_key = keys("show", "node", root=node)[1].strip()
    assert keys("allow", "--name", "render-07", "--", node_key, root=ctl)[0] == 0

    code, out, _ = keys("list", "--json", root=ctl)
    assert code == 0
    assert json.loads(out)["keys"] == [
        {"name": "controller", "public_key": controller_key, "secret": True, "allowed": False, "role": None,
         "joined": False},
        {"name": "render-07", "public_key": node_key, "secret": False, "allowed": True, "role": "both",
         "joined": False},
    ]
    text = keys("list", root=ctl)[1]
    assert "render-07" in text and node_key in text
    # the node can now build its client side from what the commands wrote
    assert ClientSecurity(node, "node").server_key.decode() == controller_key

    assert keys("revoke", "render-07", root=ctl)[0] == 0
    code, _, err = keys("revoke", "render-07", root=ctl)
    assert code == 1 and "'render-07' is not allowed (allowed: none)" in err
    code, _, err = keys("show", "ghost", root=ctl)
    assert code == 1 and err.startswith("error: 'ghost' is not a key file")


def test_keys_cli_refuses_a_secret_file_others_can_read(tmp_path):
    assert keys("create", "node", root=tmp_path)[0] == 0
    (tmp_path / "node.key_secret").chmod(0o644)
    code, _, err = keys("list", root=tmp_path)
    secret = tmp_path / "node.key_secret"
    assert code == 1 and f"{secret}: secret key file is open to group or others" in err


# -- a real secured farm --------------------------------------------------------------


class AgentThread:
    def __init__(self, url: str, security: ClientSecurity, agent_id: str, tmp_path: Path) -> None:
        scratch = tmp_path / f"scratch-{agent_id}"
        scratch.mkdir()
        self.agent = Agent(url, slots=1, agent_id=agent_id, heartbeat=0.5, liveness=4, scratch=scratch,
                           socket_setup=security.socket_setup)
        self.thread = threading.Thread(target=self.agent.run, name=agent_id, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_a_secured_controller_serves_allowed_agents_and_clients_only(store, tmp_path, synthetic, caplog):
    server = ServerSecurity(store.root)
    controller = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4,
                            security=server)
    agents: list[AgentThread] = []
    try:
        controller.start()
        url = controller.url
        assert url is not None
        agents.append(AgentThread(url, client_of(store, "stranger"), "stranger", tmp_path))
        wait_for(lambda: server.refusals >= 1, TIMEOUT_MS / 1000, "the unlisted agent to be refused")
        # and the refused agent says why, instead of waiting in silence
        wait_for(lambda: "refused the secure handshake" in caplog.text, TIMEOUT_MS / 1000, "the agent's log line")
        assert controller.status()["agents"] == []

        agents.append(AgentThread(url, client_of(store, "agent"), "good", tmp_path))
        project = synthetic(jobs=20, output_bytes=32)
        with Client(url, socket_setup=client_of(store, "agent2").socket_setup) as client:
            run_id = client.submit(load_project(project))
            summary = client.follow(run_id)
        assert summary.ok, summary
        assert (summary.total, summary.done) == (20, 20)
        assert len(list((project / "output").glob("*.bin"))) == 20
        # the key it proved (allowed as "agent") admitted it; it keeps the id it claimed ("good")
        assert [(a["id"], a["key"]) for a in controller.status()["agents"]] == [("good", "agent")]
        assert not agents[0].agent.connected and not agents[0].agent.held
        assert server.refusals >= 1
    finally:
        controller.stop(shutdown_agents=True)
        for agent in agents:
            agent.stop()
        server.stop()


def test_a_permissive_umask_does_not_leak_the_secret(tmp_path):
    # create() writes into a private temp folder and renames: the secret is never readable by others.
    old = os.umask(0)
    try:
        keys = KeyStore(tmp_path / "keys")
        keys.create("node")
    finally:
        os.umask(old)
    assert mode(keys.secret_path("node")) == 0o600
    assert mode(keys.root) == 0o700


def test_keys_cli_takes_a_key_that_begins_with_a_dash(tmp_path):
    import zmq

    public = next(p for p, _ in iter(zmq.curve_keypair, None) if p.startswith(b"-")).decode()
    assert keys("allow", "--name", "dashed", "--", public, root=tmp_path)[0] == 0
    code, out, _ = keys("list", "--json", root=tmp_path)
    row = {"name": "dashed", "public_key": public, "secret": False, "allowed": True, "role": "both",
           "joined": False}
    assert code == 0 and row in json.loads(out)["keys"]
