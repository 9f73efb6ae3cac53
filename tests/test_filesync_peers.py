"""Agents fetch project files from each other: the controller sends about one tree, whatever the count.

Real controllers and file services on 127.0.0.1, real `farm agent` processes and peer processes
(`filesync_peers_helpers.py`), real CURVE keys where keys are tested. A poisoning peer and a
peer killed mid-transfer are real processes too.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from filesync_peers_helpers import running_peer

from farm.agent.peering import PeerNode
from farm.client import Client
from farm.controller.server import Controller
from farm.embedded import stop_agents
from farm.filesync import FileClient, FileServer, Store, TransferError, build_manifest, wire
from farm.filesync.holdings import Holdings
from farm.filesync.peerserver import PeerServer
from farm.filesync.swarm import SwarmClient
from farm.filesync.tracker import SwarmFileServer
from farm.project import load_project
from farm.security import ClientSecurity, KeyStore, ServerSecurity

WAIT_S = 120  # generous: the machine is loaded; nothing waits this long unless it fails
MiB = 1 << 20
SYNCED = re.compile(r"project \S+ synced: (\d+) blocks fetched from the controller, (\d+) from peers")


def make_tree(root: Path, files: int = 8, size: int = MiB, seed: int = 3) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"asset{i}.bin").write_bytes(rng.randbytes(size))
    return root


def same_files(tree: Path, job: Path) -> bool:
    return all((job / p.name).read_bytes() == p.read_bytes() for p in tree.iterdir() if p.is_file())


@pytest.fixture
def file_service(tmp_path: Path) -> Iterator[tuple[SwarmFileServer, Path]]:
    """A controller's file service (tracker included) publishing an 8 MiB tree as "t"."""
    src = make_tree(tmp_path / "src")
    server = SwarmFileServer().start()
    server.publish("t", src, build_manifest(src))
    yield server, src
    server.close()


def fetcher(server: FileServer, cache: Path, **options: object) -> tuple[SwarmClient, Store]:
    store = Store(cache)
    return SwarmClient(server.endpoint, store, holdings=Holdings(), **options), store  # type: ignore[arg-type]


# -- real agents on a real controller --------------------------------------------------------


class Agents:
    """`farm agent` processes at log level info (their sync lines are read), each with its own cache."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, url: str, *extra: str) -> int:
        i = len(self.procs)
        log = self.tmp_path / f"agent-{i}.log"
        cmd = [sys.executable, "-m", "farm", "--log-level", "info", "agent", "--controller", url,
               "--slots", "1", "--parent-pid", str(os.getpid()), "--id", f"agent-{i}", "--cache-dir",
               str(self.tmp_path / f"cache-{i}"), *extra]
        with open(log, "wb") as out:
            self.procs.append(subprocess.Popen(cmd, stderr=out, stdout=out))
        self.logs.append(log)
        return i

    def synced(self, i: int) -> tuple[int, int] | None:
        found = SYNCED.search(self.logs[i].read_text(errors="replace"))
        return (int(found.group(1)), int(found.group(2))) if found else None

    def log(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")

    def stop(self) -> None:
        stop_agents(self.procs)


@pytest.fixture
def farm_agents(tmp_path: Path) -> Iterator[Agents]:
    agents = Agents(tmp_path)
    yield agents
    agents.stop()


def project_with_assets(folder: Path, jobs: int) -> Path:
    make_tree(folder / "assets")
    (folder / "farm.toml").write_text(f'[project]\nname = "peers"\nmedia_type = "synthetic"\n\n'
                                      f"[synthetic]\njobs = {jobs}\nsleep = 0.2\n")
    return folder


def test_three_agents_sync_one_tree_and_the_controller_sends_about_one(controller, farm_agents, tmp_path):
    for _ in range(3):
        farm_agents.start(controller.url)
    wait_for(lambda: len(controller.status()["agents"]) == 3, WAIT_S, "3 agents")
    project = project_with_assets(tmp_path / "project", jobs=30)
    tree_bytes = sum(p.stat().st_size for p in (project / "assets").iterdir())
    with Client(controller.url, timeout=WAIT_S) as client:
        summary = client.follow(client.submit(load_project(project)))
    assert summary.ok and summary.done == 30
    synced = [farm_agents.synced(i) for i in range(3)]
    assert all(synced), [farm_agents.log(i)[-2000:] for i in range(3)]
    sent = controller.assets.server.counters.bytes_out
    assert sent <= 1.5 * tree_bytes, f"the controller sent {sent / tree_bytes:.2f}x the tree ({synced})"
    assert sum(peers for _, peers in synced) > 0  # and the agents did fetch from each other


def test_a_no_peers_agent_fetches_only_from_the_controller_and_serves_none(controller, farm_agents, tmp_path):
    first = farm_agents.start(controller.url)
    wait_for(lambda: len(controller.status()["agents"]) == 1, WAIT_S, "the first agent")
    with Client(controller.url, timeout=WAIT_S) as client:  # the first agent holds the tree now
        assert client.follow(client.submit(load_project(project_with_assets(tmp_path / "p1", jobs=2)))).ok
    assert farm_agents.synced(first) is not None
    assert "serving cached project files to other agents" in farm_agents.log(first)
    loner = farm_agents.start(controller.url, "--no-peers")
    wait_for(lambda: len(controller.status()["agents"]) == 2, WAIT_S, "the --no-peers agent")
    with Client(controller.url, timeout=WAIT_S) as client:  # the same files, another run: both fetch
        p2 = load_project(project_with_assets(tmp_path / "p2", jobs=20))
        blocks = sum(e.block_count for e in build_manifest(p2.root, list(p2.assets())))
        run = client.submit(p2)
        wait_for(lambda: farm_agents.synced(loner), WAIT_S, "the --no-peers agent to sync")
        assert client.follow(run).ok
    from_controller, from_peers = farm_agents.synced(loner)  # type: ignore[misc]
    assert from_peers == 0 and from_controller == blocks  # every block of the tree, though a peer held it
    assert "serving cached project files" not in farm_agents.log(loner)


# -- bad peers ------------------------------------------------------------------------------


def test_a_peer_serving_wrong_bytes_is_dropped_and_the_blocks_come_from_elsewhere(file_service, tmp_path):
    server, src = file_service
    with running_peer(server.endpoint, "t", tmp_path / "liar-cache", "liar"):
        client, store = fetcher(server, tmp_path / "cache")
        with store, client:
            manifest = client.sync("t", tmp_path / "job")
            assert client.peer_counters.blocks_rejected >= 1  # it was asked, and caught
            assert client.peer_counters.blocks_fetched == 0
            assert client.counters.blocks_fetched == sum(e.block_count for e in manifest)
            assert same_files(src, tmp_path / "job")
            assert all(store.verify(e.digest) for e in manifest)  # the cache holds the right bytes


def test_a_peer_killed_mid_transfer_costs_a_retry_elsewhere(file_service, tmp_path):
    server, src = file_service
    with running_peer(server.endpoint, "t", tmp_path / "slow-cache", "slow") as (slow, line):
        assert line["controller"] == 64  # it fetched the tree; now it serves it, slowly
        client, store = fetcher(server, tmp_path / "cache", peer_timeout=4.0, chunk_size=256 * 1024)
        errors: list[BaseException] = []

        def sync() -> None:
            try:
                client.sync("t", tmp_path / "job")
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=sync)
        before = server.counters.bytes_out
        thread.start()
        wait_for(lambda: client.peer_counters.blocks_fetched >= 2, WAIT_S, "blocks from the slow peer")
        slow.kill()
        slow.wait()
        thread.join(WAIT_S)
        assert not thread.is_alive() and not errors, errors
        assert 2 <= client.peer_counters.blocks_fetched < 64  # some from the peer, the rest elsewhere
        assert client.counters.blocks_fetched + client.peer_counters.blocks_fetched == 64
        assert server.counters.bytes_out - before < 8 * MiB + 256 * 1024  # no block twice from the controller
        assert same_files(src, tmp_path / "job")
        client.close()
        store.close()


def test_blocks_larger_than_a_request_come_in_order_from_one_peer(file_service, tmp_path):
    server, src = file_service
    with running_peer(server.endpoint, "t", tmp_path / "peer-cache", "honest"):
        client, store = fetcher(server, tmp_path / "cache", chunk_size=48 * 1024)  # 3 requests per block
        with store, client:
            before = server.counters.bytes_out
            client.sync("t", tmp_path / "job")
            assert client.peer_counters.blocks_fetched == 64 and client.counters.blocks_fetched == 0
            assert client.peer_counters.blocks_rejected == 0
            assert server.counters.bytes_out - before < 64 * 1024  # the manifest and the tracker only
            assert same_files(src, tmp_path / "job")


def test_a_block_server_serves_a_bounded_number_of_fetchers_and_only_what_it_holds(file_service, tmp_path):
    server, _ = file_service
    holdings = Holdings()
    with Store(tmp_path / "cache") as store:
        client = SwarmClient(server.endpoint, store, holdings=holdings)
        manifest = client.sync("t", tmp_path / "job")  # holdings now name the tree, in the cache
        client.close()
        block = manifest.entries[0].block_hash(0)
        peer = PeerServer("tcp://127.0.0.1:*", holdings, max_fetchers=1, active_s=600).start()
        try:
            first = FileClient(peer.endpoint, timeout=WAIT_S)
            second = FileClient(peer.endpoint, timeout=WAIT_S)
            with first, second:
                _, payloads = first._call(wire.GET, {"items": [[block, 0, 1024]]})
                assert len(payloads[0]) == 1024
                with pytest.raises(TransferError, match="busy: serving 1 fetchers"):
                    second._call(wire.GET, {"items": [[block, 0, 1024]]})
                body, _ = second._call(wire.HAVE, {"manifest": manifest.id})  # a bitmap: for anyone admitted
                assert body["count"] == 64
                for unknown in (bytes(32), b"../../etc/passwd".ljust(32, b"\0")):  # hashes, never paths
                    body, payloads = first._call(wire.GET, {"items": [[block, 0, 1024], [unknown, 0, 1024]]})
                    assert body["missing"] == [1] and bytes(payloads[1]) == b""  # not held: that item alone
                    assert len(payloads[0]) == 1024
                for op, fields in ((wire.MANIFEST, {"tree": "t", "have": None}),
                                   (wire.COMMIT, {"token": "x"})):
                    with pytest.raises(TransferError, match=f"{op} is not served here.*serves get, have\\)"):
                        first._call(op, fields)
        finally:
            peer.close()


def test_the_tracker_grants_each_block_once_and_refuses_what_is_off(file_service):
    server, _ = file_service
    manifest = server.published("t")
    assert manifest is not None
    hashes = b"".join(manifest.entries[0].block_hash(i) for i in range(4))
    with FileClient(server.endpoint, timeout=WAIT_S) as a, FileClient(server.endpoint, timeout=WAIT_S) as b:
        def claim(client: FileClient, serve: str, payload: bytes, force: bool = False) -> bytes:
            _, payloads = client._call(wire.CLAIM, {"tree": "t", "serve": serve, "force": force}, [payload])
            return bytes(payloads[0])

        assert claim(a, "tcp://127.0.0.1:1", hashes) == hashes  # all four, to a
        assert claim(b, "tcp://127.0.0.1:2", hashes) == b""  # claimed: b waits for a peer
        assert claim(a, "tcp://127.0.0.1:1", hashes[:32]) == hashes[:32]  # its own again
        assert claim(b, "tcp://127.0.0.1:2", hashes[:32], force=True) == hashes[:32]  # the last resort
        assert claim(a, "tcp://127.0.0.1:1", bytes(32)) == b""  # in no published tree: never granted
        a._call(wire.PEERS, {"tree": "t", "serve": "tcp://127.0.0.1:1", "members": None})
        body, _ = b._call(wire.PEERS, {"tree": "t", "serve": "tcp://127.0.0.1:2", "members": None})
        assert body["peers"] == [["tcp://127.0.0.1:1", ""]]  # without keys, no key to name
        for op, fields, payloads, error in (
            (wire.CLAIM, {"tree": "t", "serve": None, "force": False}, [b"x" * 33], "hashes"),
            (wire.CLAIM, {"tree": "nope", "serve": None, "force": False}, [hashes], "no tree named"),
            (wire.PEERS, {"tree": "t", "serve": "ipc:///tmp/x", "members": None}, [], "tcp://"),
        ):
            with pytest.raises(TransferError, match=error):
                a._call(op, fields, payloads)


def test_a_file_service_without_a_tracker_serves_the_tree_as_before(tmp_path):
    src = make_tree(tmp_path / "src", files=2)
    with FileServer() as plain:  # a file service that knows no peers (a hand-written one, say)
        plain.publish("t", src, build_manifest(src))
        for attempt in ("first", "cached"):  # a fetch, then a tree already in the cache
            client, store = fetcher(plain, tmp_path / "cache", serve="tcp://127.0.0.1:9")  # type: ignore[arg-type]
            with store, client:
                client.sync("t", tmp_path / f"job-{attempt}")
                assert client.counters.blocks_fetched == (16 if attempt == "first" else 0)
            assert same_files(src, tmp_path / f"job-{attempt}")


# -- keys: who may fetch from a peer, and what each role may ask the file service ----------------


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[Controller, KeyStore, Path]]:
    """A CURVE controller; n1, n2 (agents), laptop (client), admin (both), stranger (not allowed);
    an asset tree "t" and an output tree "t.output" published."""
    keys = KeyStore(tmp_path / "keys")
    for name in ("controller", "n1", "n2", "laptop", "admin", "stranger"):
        keys.create(name)
    keys.allow("n1", role="agent")
    keys.allow("n2", role="agent")
    keys.allow("laptop", role="client")
    keys.allow("admin")
    security = ServerSecurity(keys.root)
    controller = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", security=security)
    controller.start()
    src = make_tree(tmp_path / "src", files=2)
    controller.assets.server.publish("t", src, build_manifest(src))
    controller.assets.kinds["t"] = "assets"
    make_tree(tmp_path / "out", files=1)
    controller.assets.publish_outputs("t.output", tmp_path / "out")
    try:
        yield controller, keys, src
    finally:
        controller.stop()
        security.stop()


def file_client(controller: Controller, keys: KeyStore, name: str, **options: object) -> FileClient:
    return FileClient(controller.assets.endpoint, socket_setup=ClientSecurity(keys.root, name).socket_setup,
                      timeout=options.pop("timeout", WAIT_S), **options)  # type: ignore[arg-type]


def peer_client(endpoint: str, keys: KeyStore, name: str, server_key: str) -> FileClient:
    """A client of a peer's block server with key `name`, expecting the server's key `server_key`."""
    mine = keys.load(name)

    def setup(sock) -> None:  # type: ignore[no-untyped-def]
        sock.curve_secretkey, sock.curve_publickey = mine.secret, mine.public
        sock.curve_serverkey = keys.load(server_key).public
    return FileClient(endpoint, socket_setup=setup, timeout=3.0)


def test_a_peer_serves_only_farm_members_with_the_agent_role(keyed, tmp_path):
    controller, keys, _ = keyed
    with running_peer(controller.assets.endpoint, "t", tmp_path / "n1-cache", "honest",
                      (keys.root, "n1")) as (_, line):
        endpoint = str(line["serving"])
        with file_client(controller, keys, "n2") as n2:
            manifest_id = n2.fetch_manifest("t").id
        with peer_client(endpoint, keys, "n2", "n1") as member:  # an agent's key, and n1's key named
            body, payloads = member._call(wire.HAVE, {"manifest": manifest_id})
            assert body["count"] == 16 and bytes(payloads[0]) == b"\xff\xff"
        for name in ("laptop", "stranger"):  # a client's key, a key the controller does not allow
            with peer_client(endpoint, keys, name, "n1") as outsider, \
                    pytest.raises(TransferError, match="no answer"):
                outsider._call(wire.HAVE, {"manifest": manifest_id})
        with peer_client(endpoint, keys, "n2", "n2") as fooled, \
                pytest.raises(TransferError, match="no answer"):  # not the key the controller named
            fooled._call(wire.HAVE, {"manifest": manifest_id})
        node = PeerNode(ClientSecurity(keys.root, "n2").socket_setup)  # n2 as a farm agent fetches it
        try:
            with Store(tmp_path / "n2-cache") as store, node.client(controller.assets.endpoint, store) as n2:
                n2.sync("t", tmp_path / "n2-job")
                assert n2.peer_counters.blocks_fetched == 16 and n2.counters.blocks_fetched == 0  # type: ignore
            assert node.server is not None and node.server.keys is not None  # and serves it with CURVE
        finally:
            node.close()


def test_the_file_service_applies_key_roles(keyed):
    controller, keys, src = keyed
    with file_client(controller, keys, "n1") as node:  # an agent: asset trees and the swarm
        assert node.fetch_manifest("t").total_size == 2 * MiB
        body, _ = node._call(wire.PEERS, {"tree": "t", "serve": None, "members": None})
        assert body["peers"] == []
        with pytest.raises(TransferError, match=r"role agent.*may not submit"):
            node.fetch_manifest("t.output")
        with pytest.raises(TransferError, match=r"role agent.*may not submit"):
            node.upload("some-token", src)
    with file_client(controller, keys, "laptop") as laptop:  # a client: uploads and outputs
        assert laptop.fetch_manifest("t.output").total_size == MiB
        with pytest.raises(TransferError, match=r"role client.*may not serve as an agent"):
            laptop.fetch_manifest("t")
        with pytest.raises(TransferError, match=r"role client.*may not serve as an agent"):
            laptop._call(wire.PEERS, {"tree": "t", "serve": None, "members": None})
        with pytest.raises(TransferError, match="no upload is expected"):  # past the role check
            laptop.upload("some-token", src)
    with file_client(controller, keys, "admin") as admin:  # both
        assert admin.fetch_manifest("t").total_size == 2 * MiB
        assert admin.fetch_manifest("t.output").total_size == MiB
    with file_client(controller, keys, "n2") as n2:  # connected, then revoked: refused from then on
        assert n2.fetch_manifest("t").total_size == 2 * MiB
        keys.revoke("n2")

        def refused() -> bool:
            try:
                n2.fetch_manifest("t")
            except TransferError as exc:
                return "revoked" in str(exc)
            return False
        wait_for(refused, WAIT_S, "the revoked key to be refused")
