"""The tracker and the file services: registrations renewed while an agent serves, endpoints not
repointed by another key, claims from agents that serve nothing, ops each server does not serve.

Real file services and trackers on 127.0.0.1 (a CURVE controller where keys matter), a real
`PeerNode` with its block server and renewal thread; the tracker's TTL is shrunk through its
parameter.
"""

from __future__ import annotations

import logging

import pytest
from conftest import wait_for
from test_filesync_peers import (  # noqa: F401 (fixtures)
    WAIT_S,
    file_client,
    file_service,
    keyed,
    make_tree,
)

from farm.agent.peering import PeerNode
from farm.filesync import FileClient, FileServer, Store, TransferError, build_manifest, wire
from farm.filesync.holdings import Holdings
from farm.filesync.peerserver import PeerServer
from farm.filesync.tracker import SwarmFileServer


def listed(client: FileClient) -> list[list[str]]:
    body, _ = client._call(wire.PEERS, {"tree": "t", "serve": None, "members": None})
    return sorted(body["peers"])


def register(client: FileClient, serve: str, agent: str) -> None:
    client._call(wire.PEERS, {"tree": "t", "serve": serve, "members": None, "agent": agent})


# -- 4. registrations outlive the TTL while the agent serves -------------------------------------


def test_an_agent_renews_its_registration_while_it_holds_the_tree(file_service, tmp_path):  # noqa: F811
    server, _ = file_service
    server.tracker.ttl = 1.0  # stands for the 10 minutes
    node = PeerNode(None, "a1", refresh_s=0.2)
    try:
        with Store(tmp_path / "cache") as store, node.client(server.endpoint, store) as client:
            client.sync("t", tmp_path / "job")
        assert node.server is not None
        endpoint = node.server.endpoint
        entries = server.tracker._peers["t"]
        synced = entries[endpoint].when

        def renewed_past_ttl() -> bool:
            entry = entries.get(endpoint)
            return entry is not None and entry.when > synced + 3 * server.tracker.ttl
        wait_for(renewed_past_ttl, WAIT_S, "the registration to be renewed past its TTL")
        with FileClient(server.endpoint, timeout=WAIT_S) as late:  # a late joiner still finds it
            assert [endpoint, ""] in listed(late)
        server.unpublish("t")  # the run ended: nothing to renew any more
        wait_for(lambda: not node._served, WAIT_S, "renewals of an unpublished tree to stop")
    finally:
        node.close()


# -- 5. each file server answers its own ops ---------------------------------------------------


@pytest.mark.parametrize("kind", ["file service", "tracker", "block server"])
def test_an_op_a_server_does_not_serve_is_refused_plainly_and_logged_throttled(kind, tmp_path, caplog):
    if kind == "block server":
        server: FileServer = PeerServer("tcp://127.0.0.1:*", Holdings())
        asked = (wire.CLAIM, {"tree": "t", "serve": None, "force": False}, [b""])
    else:
        server = FileServer() if kind == "file service" else SwarmFileServer()
        asked = (wire.HAVE, {"manifest": "x"}, [])
    if kind == "file service":
        src = make_tree(tmp_path / "src", files=1)
        server.publish("t", src, build_manifest(src))
    server.start()
    try:
        with caplog.at_level(logging.INFO, logger="farm.filesync"), \
                FileClient(server.endpoint, timeout=WAIT_S) as client:
            for _ in range(30):
                with pytest.raises(TransferError, match=rf"{asked[0]} is not served here \(this server"):
                    client._call(*asked)
            if kind == "file service":  # a tracker's ops, at a file service that tracks no peers
                with pytest.raises(TransferError, match="peers is not served here"):
                    client._call(wire.PEERS, {"tree": "t", "serve": None, "members": None})
    finally:
        server.close()
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= caplog.text.count("is not served here") <= 10  # throttled


# -- 6. an endpoint is not repointed by another member's key -----------------------------------


def test_a_member_cannot_register_another_members_endpoint(keyed, caplog):  # noqa: F811
    controller, keys, _ = keyed
    victim = "tcp://127.0.0.1:7001"
    n1_key = keys.load("n1").public.decode()
    with file_client(controller, keys, "n1") as n1, file_client(controller, keys, "n2") as n2, \
            file_client(controller, keys, "admin") as admin, \
            caplog.at_level(logging.WARNING, logger="farm.filesync.tracker"):
        register(n1, victim, "n1")
        for agent in ("n2", "n1"):  # its own id, or the victim's: still another key
            register(n2, victim, agent)
        assert listed(admin) == [[victim, n1_key]]  # fetchers still dial it with n1's key
        register(n2, "tcp://127.0.0.1:7002", "n2")  # its own endpoint: fine
        register(n1, victim, "n1-restarted")  # the same key again (a restarted agent): fine
        n2_key = keys.load("n2").public.decode()
        assert listed(admin) == sorted([[victim, n1_key], ["tcp://127.0.0.1:7002", n2_key]])
    assert caplog.text.count(f"ignored a registration of {victim}, which another key serves") == 2


# -- 7. a claim from an agent that serves nobody ---------------------------------------------


def test_a_claim_without_a_block_server_is_granted_and_holds_up_nobody(file_service):  # noqa: F811
    server, _ = file_service
    manifest = server.published("t")
    assert manifest is not None
    hashes = b"".join(manifest.entries[0].block_hash(i) for i in range(4))

    def claim(client: FileClient, serve: str | None) -> bytes:
        _, payloads = client._call(wire.CLAIM, {"tree": "t", "serve": serve, "force": False}, [hashes])
        return bytes(payloads[0])

    with FileClient(server.endpoint, timeout=WAIT_S) as a, FileClient(server.endpoint, timeout=WAIT_S) as b, \
            FileClient(server.endpoint, timeout=WAIT_S) as c:
        assert claim(a, None) == hashes  # serves nobody: granted, as with force
        assert claim(b, None) == hashes  # another such agent (without keys both were claimant " ")
        assert claim(c, "tcp://127.0.0.1:3") == hashes  # nobody waits for the first two
        assert claim(a, "tcp://127.0.0.1:1") == b""  # c's claim is recorded: others wait for c


def test_with_keys_an_agent_without_a_block_server_gets_no_exclusive_claims(keyed):  # noqa: F811
    controller, keys, _ = keyed
    manifest = controller.assets.server.published("t")
    assert manifest is not None
    hashes = b"".join(manifest.entries[0].block_hash(i) for i in range(2))
    with file_client(controller, keys, "n1") as n1, file_client(controller, keys, "n2") as n2:
        _, payloads = n1._call(wire.CLAIM, {"tree": "t", "serve": None, "force": False}, [hashes])
        assert bytes(payloads[0]) == hashes
        fields = {"tree": "t", "serve": "tcp://127.0.0.1:2", "force": False}
        _, payloads = n2._call(wire.CLAIM, fields, [hashes])
        assert bytes(payloads[0]) == hashes  # it need not wait FORCE_S for n1, who could never serve them
