"""An agent the controller drops is offered to nobody from then on, not for the tracker's TTL.

Before, a registration lasted `TTL_S` (600 s) or until a peer reported it dead, so agents
were offered block servers of agents that had left, each costing a failed fetch and a retry.
Real controller, real `farm agent` processes with peers on, real file-service requests.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from test_filesync_peers import (  # noqa: F401 (fixtures)
    WAIT_S,
    Agents,
    farm_agents,
    file_service,
    project_with_assets,
)

from farm.client import Client
from farm.controller.server import Controller
from farm.filesync import FileClient, wire
from farm.filesync.tracker import TTL_S
from farm.project import load_project


def offered(endpoint: str, tree: str, serve: str | None = None, agent: str = "observer") -> set[str]:
    """The block servers the tracker offers `agent` (registering `serve`, if given) for `tree`."""
    with FileClient(endpoint, timeout=WAIT_S) as client:
        body, _ = client._call(wire.PEERS, {"tree": tree, "serve": serve, "members": None, "agent": agent})
    return {endpoint for endpoint, _ in body["peers"]}


def claim(client: FileClient, serve: str, hashes: list[bytes]) -> list[bytes]:
    _, payloads = client._call(wire.CLAIM, {"tree": "t", "serve": serve, "force": False}, [b"".join(hashes)])
    raw = bytes(wire.view(payloads[0]))
    return [raw[i:i + 32] for i in range(0, len(raw), 32)]


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    """conftest's, with a liveness of 5 s: a loaded machine's late heartbeat drops no agent here."""
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "controller-state", heartbeat=0.5,
                     liveness=10)
    ctl.start()
    yield ctl
    ctl.stop(shutdown_agents=True)


def test_agents_that_leave_or_die_are_no_longer_offered(
        controller, farm_agents: Agents, tmp_path: Path):  # noqa: F811
    tracker = controller.assets.server.tracker
    assert TTL_S > 3 * WAIT_S  # what follows is the drop, not the TTL
    first, second = farm_agents.start(controller.url), farm_agents.start(controller.url)
    wait_for(lambda: len(controller.status()["agents"]) == 2, WAIT_S, "two agents")
    folder = project_with_assets(tmp_path / "project", jobs=1)
    (folder / "farm.toml").write_text('[project]\nname = "peers"\nmedia_type = "synthetic"\n\n'
                                      "[synthetic]\njobs = 3000\nsleep = 0.1\n")  # runs all along (cancelled)

    def served_by(agent: int) -> dict[str, str]:
        """endpoint -> tree, of agent-N's registrations, but those set aside for its agent being gone."""
        return {e: tree for tree in list(tracker._peers)
                for e, entry in dict(tracker._peers.get(tree, {})).items()
                if entry.who[1] == f"agent-{agent}" and entry.aside_until != math.inf}

    with Client(controller.url, timeout=WAIT_S) as client:
        run = client.submit(load_project(folder))
        # both synced (neither fetches any more, so neither reports the other dead) and registered
        wait_for(lambda: all(farm_agents.synced(i) and served_by(i) for i in (first, second)), WAIT_S,
                 "both agents to sync and register")
        (left, tree), = served_by(first).items()
        (killed, _), = served_by(second).items()
        assert offered(controller.assets.endpoint, tree) == {left, killed}

        # silent past its liveness (stopped): dropped, not offered; back (the same process): offered again
        farm_agents.procs[first].send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: controller.registry.by_id(f"agent-{first}") is None, WAIT_S,
                     "the silent agent dropped")
            assert offered(controller.assets.endpoint, tree) == {killed}
        finally:
            farm_agents.procs[first].send_signal(signal.SIGCONT)
        wait_for(lambda: offered(controller.assets.endpoint, tree) == {left, killed}, WAIT_S,
                 "the agent back, offered again")

        farm_agents.procs[first].send_signal(signal.SIGTERM)  # it says BYE
        assert farm_agents.procs[first].wait(WAIT_S) == 0
        wait_for(lambda: not served_by(first), WAIT_S, "the departed agent's registration set aside")
        assert offered(controller.assets.endpoint, tree) == {killed}

        os.kill(farm_agents.procs[second].pid, signal.SIGKILL)  # no BYE: the controller declares it gone
        farm_agents.procs[second].wait()
        wait_for(lambda: not served_by(second), WAIT_S, "the dead agent's registration set aside")
        assert offered(controller.assets.endpoint, tree) == set()
        assert controller.registry.by_id(f"agent-{second}") is None
        client.cancel(run)


def test_forgetting_an_agent_drops_its_registrations_in_every_tree_and_frees_its_claims(
        file_service):  # noqa: F811 (the fixture)
    server, _ = file_service
    blocks = sorted(server._index.blocks)[:3]
    with FileClient(server.endpoint, timeout=WAIT_S) as a1, FileClient(server.endpoint, timeout=WAIT_S) as a2:
        a1._call(wire.PEERS, {"tree": "t", "serve": "tcp://127.0.0.1:1", "members": None, "agent": "a1"})
        a2._call(wire.PEERS, {"tree": "t", "serve": "tcp://127.0.0.1:2", "members": None, "agent": "a2"})
        assert claim(a1, "tcp://127.0.0.1:1", blocks) == blocks
        assert claim(a2, "tcp://127.0.0.1:2", blocks) == []  # a1 holds them (for CLAIM_S)
        assert server.tracker.forget_agent("", "someone-else") == 0
        assert offered(server.endpoint, "t") == {"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"}
        assert server.tracker.forget_agent("", "a1") == 1
        assert offered(server.endpoint, "t") == {"tcp://127.0.0.1:2"}
        assert claim(a2, "tcp://127.0.0.1:2", blocks) == blocks  # at once, not after CLAIM_S
        assert server.tracker.forget_agent("other-key", "a2") == 0  # another key's agent of that id
        assert offered(server.endpoint, "t") == {"tcp://127.0.0.1:2"}
        a2._call(wire.PEERS, {"tree": "t", "serve": "tcp://127.0.0.1:2", "members": None, "agent": "a2",
                              "dead": ["tcp://127.0.0.1:1"]})  # a report sets it aside for 30 s only...
        assert offered(server.endpoint, "t") == {"tcp://127.0.0.1:2"}  # ...but a1 stays aside: it is gone
        assert server.tracker.restore_agent("", "a1") == 1  # the same process back
        assert offered(server.endpoint, "t") == {"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"}
        assert server.tracker.forget_agent("", "a2") == 1
        assert offered(server.endpoint, "t") == {"tcp://127.0.0.1:1"}
        # a2 registers again, elsewhere
        assert offered(server.endpoint, "t", "tcp://127.0.0.1:3", "a2") == {"tcp://127.0.0.1:1"}
        assert offered(server.endpoint, "t") == {"tcp://127.0.0.1:1", "tcp://127.0.0.1:3"}


def test_a_departed_agents_address_may_be_taken_by_another_key():
    """A live member's endpoint is never repointed to another key; one whose agent the controller
    dropped may be (a machine back at its old address with a new key need not wait 10 minutes)."""
    from farm.filesync.tracker import Tracker

    tracker = Tracker()
    tracker.register("t", "tcp://10.0.0.5:7000", "old-key", "n5")
    tracker.register("t", "tcp://10.0.0.5:7000", "new-key", "n5")  # n5 still counts as live: ignored
    assert tracker.listing("t", None) == [["tcp://10.0.0.5:7000", "old-key"]]
    assert tracker.forget_agent("old-key", "n5") == 1
    tracker.register("t", "tcp://10.0.0.5:7000", "new-key", "n5")
    assert tracker.listing("t", None) == [["tcp://10.0.0.5:7000", "new-key"]]
