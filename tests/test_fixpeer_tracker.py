"""The tracker offers no agent itself nor a dead peer; a dead peer costs a fetch little.

Real file services and trackers on 127.0.0.1, real `farm agent` processes (one killed with
SIGKILL and restarted with the same id and cache), real sockets to a port nobody listens on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from conftest import wait_for
from filesync_peers_helpers import running_peer
from test_filesync_peers import (  # noqa: F401 (fixtures)
    WAIT_S,
    Agents,
    farm_agents,
    fetcher,
    file_service,
    project_with_assets,
    same_files,
)
from test_fixpeer_counts import SUMMARY

from farm.client import Client
from farm.filesync import FileClient, TransferError, wire
from farm.project import load_project


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def peers(client: FileClient, serve: str | None, agent: str | None = None, dead: list[str] | None = None
          ) -> list[str]:
    fields = {"tree": "t", "serve": serve, "members": None, "dead": dead or []}
    body, _ = client._call(wire.PEERS, {**fields, "agent": agent} if agent else fields)
    return sorted(endpoint for endpoint, _ in body["peers"])


def test_a_new_registration_of_an_agent_replaces_its_old_one_and_nobody_is_offered_itself(
        file_service):  # noqa: F811 (the fixture)
    server, _ = file_service
    old, new, other = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"
    with FileClient(server.endpoint, timeout=WAIT_S) as a1, FileClient(server.endpoint, timeout=WAIT_S) as a2:
        assert peers(a1, old, "a1") == []
        assert peers(a2, other, "a2") == [old]
        assert peers(a1, new, "a1") == [other]  # the restarted a1 is not offered its dead predecessor
        assert peers(a2, other, "a2") == [new]  # nor anyone else: it is replaced
        assert peers(a1, None, "a1") == [other]  # a1 asking without serving still never gets itself
        # an agent that names no id is known by its endpoint, as before
        assert peers(a2, "tcp://127.0.0.1:4") == [new, other]
        with pytest.raises(TransferError, match="agent must be"):
            peers(a1, new, "x" * 200)
        with pytest.raises(TransferError, match="dead peers"):
            peers(a1, new, "a1", dead=[other] * 17)


def test_a_peer_reported_dead_is_set_aside_for_everyone_until_it_registers_again(
        file_service):  # noqa: F811 (the fixture)
    server, _ = file_service
    with FileClient(server.endpoint, timeout=WAIT_S) as a1, FileClient(server.endpoint, timeout=WAIT_S) as a2:
        peers(a1, "tcp://127.0.0.1:1", "a1")
        assert peers(a2, "tcp://127.0.0.1:2", "a2", dead=["tcp://127.0.0.1:1"]) == []
        assert peers(a2, "tcp://127.0.0.1:2", "a2") == []  # still aside: for a while, for everyone
        server.tracker.aside_s = 0.2  # bounded: once it passes, listed again without registering
        peers(a2, "tcp://127.0.0.1:2", "a2", dead=["tcp://127.0.0.1:1"])
        wait_for(lambda: peers(a2, "tcp://127.0.0.1:2", "a2") == ["tcp://127.0.0.1:1"], WAIT_S,
                 "a dead report to lapse")
        server.tracker.aside_s = 600.0
        assert peers(a2, "tcp://127.0.0.1:2", "a2", dead=["tcp://127.0.0.1:1"]) == []
        assert peers(a1, "tcp://127.0.0.1:1", "a1") == ["tcp://127.0.0.1:2"]  # alive after all: it says so
        assert peers(a2, "tcp://127.0.0.1:2", "a2") == ["tcp://127.0.0.1:1"]


def test_a_peer_whose_connection_is_refused_costs_no_peer_timeout(
        file_service, tmp_path, caplog):  # noqa: F811 (the fixture)
    server, src = file_service
    dead = f"tcp://127.0.0.1:{free_port()}"
    with FileClient(server.endpoint, timeout=WAIT_S) as ghost:
        peers(ghost, dead, "ghost")  # registered, then "killed": nothing listens there
    client, store = fetcher(server, tmp_path / "cache", serve="tcp://127.0.0.1:1", agent="a1",
                            peer_timeout=WAIT_S)  # a timeout alone would stall the fetch for minutes
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="farm.filesync"), client:
        client.sync("t", tmp_path / "job")
    took = time.monotonic() - started
    store.close()
    assert same_files(src, tmp_path / "job")
    assert f"peer {dead} refused the connection" in caplog.text
    assert took < WAIT_S / 2, took
    with FileClient(server.endpoint, timeout=WAIT_S) as other:  # reported: set aside for everyone
        assert dead not in peers(other, "tcp://127.0.0.1:5", "a5")


def test_a_restarted_agent_is_not_sent_its_killed_predecessor(
        controller, farm_agents: Agents, tmp_path: Path):  # noqa: F811 (the fixture)
    tracker = controller.assets.server.tracker
    a2 = farm_agents.start(controller.url)  # first: it takes the file port + 1, so a1 serves elsewhere
    wait_for(lambda: len(controller.status()["agents"]) == 1, WAIT_S, "agent a2")
    a1 = farm_agents.start(controller.url)
    wait_for(lambda: len(controller.status()["agents"]) == 2, WAIT_S, "agent a1")
    folder = project_with_assets(tmp_path / "project", jobs=1)
    (folder / "farm.toml").write_text('[project]\nname = "peers"\nmedia_type = "synthetic"\n\n'
                                      "[synthetic]\njobs = 400\nsleep = 0.1\n")  # runs while a1 restarts

    def served_by(agent: int) -> set[str]:
        return {e for tree in list(tracker._peers) for e, entry in dict(tracker._peers.get(tree, {})).items()
                if entry.who[1] == f"agent-{agent}"}

    with Client(controller.url, timeout=WAIT_S) as client:
        run = client.submit(load_project(folder))
        wait_for(lambda: farm_agents.synced(a1) and served_by(a1), WAIT_S, "a1 to sync and serve")
        killed = served_by(a1)
        os.kill(farm_agents.procs[a1].pid, signal.SIGKILL)
        farm_agents.procs[a1].wait()
        hold = socket.socket()  # the dead a1's port, taken: the new a1 serves elsewhere
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the dead one's TIME_WAIT
        hold.bind(("127.0.0.1", int(next(iter(killed)).rpartition(":")[2])))
        hold.listen(1)
        again = farm_agents.start(controller.url, "--id", f"agent-{a1}", "--cache-dir",
                                  str(tmp_path / f"cache-{a1}"))
        # the same agent, serving elsewhere now: its new registration replaces the old
        wait_for(lambda: farm_agents.synced(again) and served_by(a1) and not served_by(a1) & killed, WAIT_S,
                 "a1's new registration to replace the old")
        for tree in list(tracker._peers):
            assert not killed & {e for e, _ in tracker.listing(tree, None)}  # offered to nobody
        client.cancel("peers")
        client.follow(run)
        hold.close()
    assert "did not answer" not in farm_agents.log(again)
    for i in (a1, again):  # each sync line accounts for every block of the tree
        *parts, total = map(int, SUMMARY.search(farm_agents.log(i)).groups())
        assert sum(parts) == total, farm_agents.log(i)
    assert farm_agents.procs[a2].poll() is None


def test_a_peer_killed_mid_transfer_is_dropped_when_its_reconnect_is_refused(
        file_service, tmp_path, caplog):  # noqa: F811 (the fixture)
    server, src = file_service
    with running_peer(server.endpoint, "t", tmp_path / "slow-cache", "slow") as (slow, line):
        endpoint = line["serving"]
        client, store = fetcher(server, tmp_path / "cache", peer_timeout=WAIT_S, chunk_size=256 * 1024)
        with caplog.at_level(logging.INFO, logger="farm.filesync"), \
                concurrent.futures.ThreadPoolExecutor(1) as pool:
            fetched = pool.submit(client.sync, "t", tmp_path / "job")
            wait_for(lambda: client.peer_counters.blocks_fetched >= 2, WAIT_S, "blocks from the slow peer")
            killed = time.monotonic()
            slow.kill()
            slow.wait()
            fetched.result(WAIT_S)  # raises what the sync raised
        assert time.monotonic() - killed < WAIT_S / 2  # not the peer timeout: the refusal said it
        assert f"peer {endpoint} refused the connection" in caplog.text
        assert same_files(src, tmp_path / "job")
        client.close()
        store.close()
