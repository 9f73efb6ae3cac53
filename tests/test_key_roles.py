"""Key roles: a render node's key may not steer the farm, a client's key may not serve as an agent.

A real CURVE controller on loopback with real agents (threads and one `farm agent` process), real
clients and real join tokens; the keys folder as `farm keys` writes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from typer.testing import CliRunner

from farm.agent.agent import Agent
from farm.cli.keys import app as keys_app
from farm.client import Client
from farm.controller.server import Controller
from farm.errors import FarmError
from farm.join import join
from farm.project import load_project
from farm.security import ClientSecurity, KeyStore, ServerSecurity, allowed_roles
from farm.tokens import TokenStore, format_join

WAIT_S = 60  # generous: the machine is loaded; nothing waits this long unless it fails
NODE_REFUSAL = "key n1 is a render node's key (role agent): it may not submit, steer or look at projects"
CLIENT_REFUSAL = "key laptop is a client's key (role client): it may not serve as an agent"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    """The controller's keys folder: its own pair, and one pair per peer (their secrets are here
    only so the test can play every peer), allowed as n1 (agent), laptop (client), admin (both)."""
    keys = KeyStore(tmp_path / "keys")
    for name in ("controller", "n1", "laptop", "admin"):
        keys.create(name)
    keys.allow("n1", role="agent")
    keys.allow("laptop", role="client")
    keys.allow("admin")  # by hand, no role: both, as before roles
    return keys


@pytest.fixture
def farm(store: KeyStore, tmp_path: Path) -> Iterator[Controller]:
    security = ServerSecurity(store.root)
    controller = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4,
                            security=security)
    controller.start()
    agents: list[AgentThread] = []
    controller.test_agents = agents  # type: ignore[attr-defined]
    try:
        yield controller
    finally:
        controller.stop(shutdown_agents=True)
        for agent in agents:
            agent.stop()
        security.stop()


class AgentThread:
    """A real agent in a thread, proving `key` from `store`."""

    def __init__(self, controller: Controller, store: KeyStore, key: str, agent_id: str,
                 tmp_path: Path) -> None:
        scratch = tmp_path / f"scratch-{agent_id}"
        scratch.mkdir()
        assert controller.url is not None
        self.agent = Agent(controller.url, slots=1, agent_id=agent_id, heartbeat=0.5, liveness=4,
                           scratch=scratch, socket_setup=ClientSecurity(store.root, key).socket_setup)
        self.thread = threading.Thread(target=self.agent.run, name=agent_id, daemon=True)
        self.thread.start()
        controller.test_agents.append(self)  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def client(controller: Controller, store: KeyStore, key: str) -> Client:
    assert controller.url is not None
    return Client(controller.url, socket_setup=ClientSecurity(store.root, key).socket_setup, timeout=WAIT_S)


def agent_ids(controller: Controller) -> list[str]:
    return sorted(a["id"] for a in controller.status()["agents"])


def test_a_node_key_renders_but_cannot_submit_steer_or_look(farm, store, tmp_path, synthetic):
    AgentThread(farm, store, "n1", "n1", tmp_path)
    wait_for(lambda: agent_ids(farm) == ["n1"], WAIT_S, "n1 to serve")
    project = synthetic(jobs=6, output_bytes=16)
    with client(farm, store, "laptop") as laptop:  # a client key submits; the node key renders
        run_id = laptop.submit(load_project(project))
        summary = laptop.follow(run_id)
    assert summary.ok and summary.done == 6
    assert len(list((project / "output").glob("*.bin"))) == 6

    other = synthetic(jobs=3, output_bytes=16)
    with client(farm, store, "n1") as node:
        attempts = {
            "submit": lambda: node.submit(load_project(other)),
            "cancel": lambda: node.cancel(run_id),
            "pause": lambda: node.pause(run_id),
            "retry": lambda: node.retry(run_id),
            "drain": lambda: node.drain("n1"),
            "status": node.status,
            "query": lambda: node.project(run_id),
            "follow": lambda: node.attach(run_id),
            "events": lambda: next(iter(node.events())),
        }
        for what, attempt in attempts.items():
            with pytest.raises(FarmError) as refused:
                attempt()
            assert NODE_REFUSAL in str(refused.value), what
            assert "farm keys invite --client" in str(refused.value), what
    # nothing it asked for happened: no second run, n1 not drained and rendering the next project
    assert list(farm.runs) == [run_id]
    with client(farm, store, "laptop") as laptop:
        assert laptop.follow(laptop.submit(load_project(other))).done == 3
        assert [a["id"] for a in laptop.status()["agents"]] == ["n1"]


def test_a_client_key_cannot_serve_as_an_agent(farm, store, tmp_path, caplog):
    refused = AgentThread(farm, store, "laptop", "sneaky", tmp_path)
    refused.thread.join(WAIT_S)  # it is told why, and stops: retrying cannot help
    assert not refused.thread.is_alive()
    assert refused.agent.refused_role is not None and CLIENT_REFUSAL in refused.agent.refused_role
    assert "farm agent --join" in refused.agent.refused_role
    assert agent_ids(farm) == []
    assert CLIENT_REFUSAL in caplog.text  # the controller logs it too


def test_a_client_key_farm_agent_exits_78_naming_the_reason(farm, store, tmp_path):
    node_keys = KeyStore(tmp_path / "laptop-keys")  # the laptop's own folder: its pair, the controller's key
    pair = store.load("laptop")
    node_keys.root.mkdir(mode=0o700)
    for suffix in (".key", ".key_secret"):
        (node_keys.root / f"laptop{suffix}").write_bytes((store.root / f"laptop{suffix}").read_bytes())
    (node_keys.root / "laptop.key_secret").chmod(0o600)
    node_keys.add_public("controller", store.load("controller").public.decode())
    assert node_keys.load("laptop").public == pair.public
    done = subprocess.run([sys.executable, "-m", "farm", "agent", "--controller", str(farm.url), "--keys-dir",
                           str(node_keys.root), "--key", "laptop", "--id", "sneaky", "--slots", "1"],
                          capture_output=True, text=True, timeout=WAIT_S * 2)
    assert done.returncode == 78, done.stderr  # a service manager does not restart it
    assert CLIENT_REFUSAL in done.stderr and "Traceback" not in done.stderr


def test_a_both_key_serves_and_submits(farm, store, tmp_path, synthetic):
    AgentThread(farm, store, "admin", "a1", tmp_path)
    wait_for(lambda: agent_ids(farm) == ["a1"], WAIT_S, "a1 to serve")
    project = synthetic(jobs=4, output_bytes=16)
    with client(farm, store, "admin") as admin:
        summary = admin.follow(admin.submit(load_project(project)))
        assert summary.ok and summary.done == 4
        admin.drain("a1")  # steering and looking are allowed
        admin.undrain("a1")
        assert admin.jobs(summary.id)["total"] == 4
        assert [a["id"] for a in admin.status()["agents"]] == ["a1"]


def test_a_serving_agent_whose_key_becomes_a_client_key_is_dropped(farm, store, tmp_path):
    served = AgentThread(farm, store, "admin", "a1", tmp_path)
    wait_for(lambda: agent_ids(farm) == ["a1"], WAIT_S, "a1 to serve")
    store.allow("admin", role="client")  # a running controller re-reads allowed/ by itself
    served.thread.join(WAIT_S)
    assert not served.thread.is_alive()
    assert "key admin is a client's key" in str(served.agent.refused_role)
    wait_for(lambda: agent_ids(farm) == [], WAIT_S, "a1 to be dropped")


def test_joined_keys_get_their_token_kind(farm, store, tmp_path):
    tokens = TokenStore(store)
    url, server_key = str(farm.url), store.load("controller").public

    def joined(kind: str, folder: str, key_name: str, name: str) -> str:
        argument = format_join(url, server_key, tokens.create(kind=kind))
        result = join(argument, tmp_path / folder, key_name, name=name, role=kind)
        assert result.name is not None
        return result.name

    node = joined("agent", "node-keys", "node", "render-07")
    laptop = joined("client", "ws-keys", "client", "ws-1")
    roles = allowed_roles(store)
    node_key = KeyStore(tmp_path / "node-keys").load("node").public
    ws_key = KeyStore(tmp_path / "ws-keys").load("client").public
    assert (roles[node_key], roles[ws_key]) == ("agent", "client")
    assert {(r["name"], r["role"]) for r in store.listing(roles)} >= {(node, "agent"), (laptop, "client")}

    # the joined node's key is refused as a client, naming it
    stolen = ClientSecurity(tmp_path / "node-keys", "node", server_key)
    with Client(url, socket_setup=stolen.socket_setup, timeout=WAIT_S) as thief, \
            pytest.raises(FarmError, match="key render-07 is a render node's key"):
        thief.status()
    # the workstation's key, given an agent token too, becomes both (and spends that token)
    assert joined("agent", "ws-keys", "client", "ws-1") == laptop
    assert allowed_roles(store)[ws_key] == "both"
    assert [t.uses[0]["role"] for t in tokens.all() if t.uses][-1] == "agent"


def test_a_key_allowed_before_roles_takes_its_token_kind_else_both(store):
    tokens = TokenStore(store)
    token = tokens.create(kind="agent")
    node = KeyStore(store.root.parent / "node")
    key = node.create("node").public
    name = tokens.redeem(token.split("-")[0], key, "old-node", "agent")
    assert allowed_roles(store)[key] == "agent"
    for old in (store.allowed_path(name), store.allowed_path("admin")):  # as a version before roles wrote it
        old.write_text("\n".join(line for line in old.read_text().splitlines() if "role =" not in line))
    roles = allowed_roles(store)
    assert roles[key] == "agent"  # it joined with an agent token
    assert roles[store.load("admin").public] == "both"  # allowed by hand: as before


def keys_cli(*args: str, root: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(keys_app, [args[0], "--keys-dir", str(root), *args[1:]])
    return result.exit_code, result.stdout, result.stderr


def test_keys_allow_role_and_list(tmp_path):
    root = tmp_path / "keys"
    for name in ("controller", "n1", "n2", "ws"):
        assert keys_cli("create", name, root=root)[0] == 0
    code, _, err = keys_cli("allow", "n1", "--role", "agent", root=root)
    assert code == 0 and "allowed n1 as agent" in err
    assert keys_cli("allow", "n2", root=root)[2].startswith("allowed n2 as both")  # the default: both
    assert keys_cli("allow", "ws", "--role", "client", root=root)[0] == 0
    assert keys_cli("allow", "n1", root=root)[2].startswith("allowed n1 as agent")  # again: keeps its role
    code, _, err = keys_cli("allow", "n2", "--role", "root", root=root)
    assert code == 1 and "bad key role 'root': use one of agent, client, both" in err

    code, out, _ = keys_cli("list", "--json", root=root)
    assert code == 0
    roles = {r["name"]: r["role"] for r in json.loads(out)["keys"]}
    assert roles == {"controller": None, "n1": "agent", "n2": "both", "ws": "client"}
    text = keys_cli("list", root=root)[1]
    assert "allowed as agent" in text and "allowed as client" in text and "allowed as both" in text
    # the role is a line of the allowed file's metadata: zmq and czmq read the key as before
    assert 'role = "agent"' in (root / "allowed" / "n1.key").read_text()
    assert keys_cli("allow", "n1", "--role", "both", root=root)[2].startswith("allowed n1 as both")
    assert allowed_roles(KeyStore(root))[KeyStore(root).load("n1").public] == "both"


def test_block_servers_admit_the_agent_keys_the_allow_list_holds(store):
    """What the controller vouches for to agents' block servers (`fileroles.members`): agent and
    both keys and its own, never a client's; a change to allowed/ shows without a restart."""
    from farm.controller.fileroles import members

    security = ServerSecurity(store.root)
    try:
        listed = members(security)
        own, n1, laptop, admin = (store.load(n).public.decode() for n in ("controller", "n1", "laptop", "admin"))
        assert listed() == sorted([own, n1, admin]) and laptop not in listed()
        store.allow("laptop", role="agent", force=True)  # `farm keys allow`, no reload() call
        wait_for(lambda: laptop in listed(), WAIT_S, "the new agent key to be admitted")
        store.allow("n1", role="client", force=True)
        wait_for(lambda: n1 not in listed(), WAIT_S, "the client key to be dropped")
    finally:
        security.stop()
