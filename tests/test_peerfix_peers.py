"""A fetch's peers: a silent one is given up on once, an evicted file is refused block by block,
and the peers one fetch holds open are bounded.

Real file services and trackers on 127.0.0.1, real block servers (`PeerServer`) serving a real
cache, real TCP listeners that accept and never answer (a hung node, a DROP firewall after the
handshake). Timing is shrunk through parameters (``peer_timeout``, ``penalty_s``).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_filesync_peers import WAIT_S, fetcher, file_service, make_tree, same_files  # noqa: F401 (fixtures)

from farm.filesync import FileClient, Store, build_manifest, wire
from farm.filesync.holdings import Bits, Holdings, bitmap
from farm.filesync.peerserver import PeerServer
from farm.filesync.peerset import LIVE_PEERS, PeerSet
from farm.filesync.published import Place
from farm.filesync.swarm import SwarmClient
from farm.filesync.tracker import SwarmFileServer

MiB = 1 << 20


def register(server: SwarmFileServer, serve: str, agent: str) -> None:
    """``serve`` registered with the tracker as a block server of "t"."""
    with FileClient(server.endpoint, timeout=WAIT_S) as client:
        client._call(wire.PEERS, {"tree": "t", "serve": serve, "members": None, "dead": [], "agent": agent})


class Silent:
    """A TCP port that completes every handshake and never says a word; counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.setblocking(False)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []

    def connections(self) -> int:
        """Connections made so far (the kernel completes them in the backlog; taken and held here)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return len(self.conns)
            self.conns.append(conn)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()


@contextmanager
def silent_peers(count: int) -> Iterator[list[Silent]]:
    peers = [Silent() for _ in range(count)]
    try:
        yield peers
    finally:
        for peer in peers:
            peer.close()


@contextmanager
def serving(server: SwarmFileServer, cache: Path, peer_class: type[PeerServer] = PeerServer
            ) -> Iterator[tuple[PeerServer, Store, Holdings]]:
    """A block server holding tree "t" (synced into ``cache``), registered with the tracker."""
    holdings = Holdings()
    with Store(cache) as store:
        with SwarmClient(server.endpoint, store, holdings=holdings) as client:
            client.sync("t", cache.parent / f"{cache.name}-job")
        peer = peer_class("tcp://127.0.0.1:*", holdings).start()
        try:
            register(server, peer.endpoint, "holder")
            yield peer, store, holdings
        finally:
            peer.close()


# -- 1. a peer that never answers ---------------------------------------------------------------


class SlowService(SwarmFileServer):
    """A controller's file service that takes 30 ms per block read (a fetch lasts seconds)."""

    def read_chunk(self, place: Place, offset: int, length: int) -> bytes:
        time.sleep(0.03)
        return super().read_chunk(place, offset, length)


@pytest.fixture
def slow_service(tmp_path: Path) -> Iterator[tuple[SwarmFileServer, Path]]:
    src = make_tree(tmp_path / "src")
    server = SlowService().start()
    server.publish("t", src, build_manifest(src))
    server.tracker.aside_s = 0.0  # the tracker keeps listing a silent peer: the fetch itself must not go back
    yield server, src
    server.close()


def test_a_peer_that_accepts_and_never_answers_is_given_up_on_once(slow_service, tmp_path, caplog):
    server, src = slow_service
    with silent_peers(1) as (ghost,):
        register(server, ghost.endpoint, "ghost")
        # a tiny penalty: a fetch that came back to the ghost after it would wait on it again and again
        client, store = fetcher(server, tmp_path / "cache", agent="a1", serve="tcp://127.0.0.1:1",
                                peer_timeout=1.0, penalty_s=0.01, window=128 * 1024, chunk_size=128 * 1024)
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="farm.filesync"), store, client:
            client.sync("t", tmp_path / "job")
        took = time.monotonic() - started
        assert same_files(src, tmp_path / "job")
        assert ghost.connections() == 1  # dialled once, never again after its peer timeout
        assert f"peer {ghost.endpoint} did not answer in 1 s; fetching without it" in caplog.text
        # before: after every penalty it was dialled again and held up claims for a peer timeout
        assert took < 30, took


def test_several_silent_peers_are_each_dialled_once(slow_service, tmp_path):
    server, src = slow_service
    with silent_peers(3) as ghosts:
        client, store = fetcher(server, tmp_path / "cache", agent="a1", serve="tcp://127.0.0.1:1",
                                peer_timeout=0.5, penalty_s=0.01, window=128 * 1024, chunk_size=128 * 1024)
        for ghost in ghosts:
            register(server, ghost.endpoint, ghost.endpoint)
        with store, client:
            client.sync("t", tmp_path / "job")
        assert same_files(src, tmp_path / "job")
        assert [g.connections() for g in ghosts] == [1, 1, 1]


# -- 2. a block server whose cache file was evicted ----------------------------------------------


def evict_one(cache: Path, manifest_digests: list[bytes]) -> bytes:
    """Another agent sharing ``cache`` (its own `Store`, a smaller limit) evicts one file of the tree."""
    victim = manifest_digests[0]
    with Store(cache, max_bytes=7 * MiB) as other:
        other.evict(keep=manifest_digests[1:])
        assert victim not in other
    return victim


def test_a_peer_refuses_only_the_blocks_of_an_evicted_file_and_stops_offering_them(file_service, tmp_path):  # noqa: F811 (the fixture)
    server, _ = file_service
    manifest = server.published("t")
    assert manifest is not None
    with serving(server, tmp_path / "peer-cache") as (peer, _, holdings):
        gone = evict_one(tmp_path / "peer-cache", [e.digest for e in manifest.entries])
        lost = next(e for e in manifest.entries if e.digest == gone)
        kept = next(e for e in manifest.entries if e.digest != gone)
        with FileClient(peer.endpoint, timeout=WAIT_S) as asker:
            _, bits = asker._call(wire.HAVE, {"manifest": manifest.id})
            assert Bits.parse(bytes(bits[0]), 64).is_full()  # not noticed yet: nobody asked
            items = [[kept.block_hash(0), 0, 1024], [lost.block_hash(1), 0, 1024],
                     [kept.block_hash(1), 0, 10]]
            body, payloads = asker._call(wire.GET, {"items": items})
            assert body["missing"] == [1]  # the other items are served
            assert [len(p) for p in payloads] == [1024, 0, 10]
            _, bits = asker._call(wire.HAVE, {"manifest": manifest.id})
            have = Bits.parse(bytes(bits[0]), 64)
            assert len(have) == 56  # every block of the evicted file is no longer offered, the rest is
            assert holdings.where(lost.block_hash(5)) is None


def test_a_fetcher_takes_an_evicted_file_elsewhere_and_the_rest_from_the_same_peer(file_service, tmp_path):  # noqa: F811 (the fixture)
    server, src = file_service
    manifest = server.published("t")
    assert manifest is not None
    with serving(server, tmp_path / "peer-cache"):
        evict_one(tmp_path / "peer-cache", [e.digest for e in manifest.entries])  # its bitmap still says 64
        client, store = fetcher(server, tmp_path / "cache", agent="a1", serve="tcp://127.0.0.1:1",
                                peer_timeout=WAIT_S)
        before = server.counters.blocks_served
        with store, client:
            client.sync("t", tmp_path / "job")
            assert same_files(src, tmp_path / "job")
            # the peer was not set aside for refusing one file: every other block came from it
            assert client.peer_counters.blocks_fetched == 56
            assert client.counters.blocks_fetched == 8
            assert server.counters.blocks_served - before == 8


def test_two_fetches_of_one_tree_offer_it_until_both_end(file_service, tmp_path):  # noqa: F811 (the fixture)
    server, _ = file_service
    manifest = server.published("t")
    assert manifest is not None
    x, y = manifest.entries[0].block_hash(0), manifest.entries[1].block_hash(0)
    holdings = Holdings()
    with Store(tmp_path / "cache") as store:  # two projects with the same assets, fetched at once
        first = holdings.begin(manifest, store.file_path, tmp_path / "session-1", missing=[y])
        second = holdings.begin(manifest, store.file_path, tmp_path / "session-2", missing=[x])
        where = holdings.where(x)
        assert where is not None and str(tmp_path / "session-1") in str(where.paths)
        assert str(tmp_path / "session-2") not in str(where.paths)  # only where it was verified
        holdings.forget(first)  # one fetch failed: the other still offers what it holds
        held = holdings.have(manifest.id)
        assert held is not None and len(Bits.parse(held[1], 64)) == 63
        assert holdings.where(x) is None and holdings.where(y) is not None
        holdings.add(second, x)  # it fetched x since
        assert holdings.where(x) is not None
        holdings.forget(second)
        assert holdings.have(manifest.id) is None


# -- 3. bounded peers, bitmaps polled while they can still change ----------------------------------


def test_one_fetch_connects_to_a_bounded_number_of_peers(tmp_path):
    with silent_peers(LIVE_PEERS + 8) as ghosts, FileClient("tcp://127.0.0.1:1") as base:
        def open_client(endpoint: str, key: str) -> FileClient:
            return FileClient(endpoint, None, context=base.context)

        peers = PeerSet(open_client, peer_timeout=0.5, penalty_s=WAIT_S)
        try:
            listed = [[g.endpoint, ""] for g in ghosts]
            peers.add(listed, None, time.monotonic())
            assert len(peers.live) == LIVE_PEERS
            dropped = next(iter(peers.live.values()))
            peers.drop(dropped, time.monotonic() + WAIT_S)
            peers.add(listed, None, time.monotonic())  # its slot goes to another; it is not taken back
            assert len(peers.live) == LIVE_PEERS and dropped.endpoint not in peers.live
            far = time.monotonic() + 10  # its silence noticed: all dropped, for good
            assert len(peers.expire(far)) == 0  # nothing asked of them yet
            for peer in peers.live.values():
                peer.have_rid, peer.have_sent = 1, time.monotonic()
            assert len(peers.expire(far)) == LIVE_PEERS and not peers.live
            peers.add(listed, None, far)
            assert len(peers.live) == len(ghosts) - LIVE_PEERS - 1  # only those never dialled
        finally:
            peers.close()


class CountingPeer(PeerServer):
    """A block server that counts the bitmaps it is asked for, and serves each block 20 ms late
    (so a fetch lasts a second or more: time for many polls)."""

    haves = 0

    def _on_have(self, request: wire.Request) -> list[object]:
        CountingPeer.haves += 1
        return super()._on_have(request)

    def _read(self, block_hash: bytes, offset: int, length: int) -> bytes | None:
        time.sleep(0.02)
        return super()._read(block_hash, offset, length)


def test_a_full_bitmap_is_asked_for_once(file_service, tmp_path):  # noqa: F811 (the fixture)
    server, src = file_service
    CountingPeer.haves = 0
    with serving(server, tmp_path / "peer-cache", CountingPeer):
        client, store = fetcher(server, tmp_path / "cache", agent="a1", serve="tcp://127.0.0.1:1",
                                peer_timeout=WAIT_S)
        started = time.monotonic()
        with store, client:
            client.sync("t", tmp_path / "job")
            took = time.monotonic() - started
            assert client.peer_counters.blocks_fetched == 64
        assert same_files(src, tmp_path / "job")
        assert took > 1.0  # long enough for four polls a second
        assert CountingPeer.haves == 1


@pytest.mark.parametrize("count", [1, 7, 8, 9, 100_003])
def test_bitmaps_round_trip_and_ignore_bits_past_the_count(count):
    indices = set(range(0, count, 3)) | {count - 1}
    raw = bitmap(indices, count)
    assert len(raw) == (count + 7) // 8
    bits = Bits.parse(raw, count)
    assert {i for i in range(count) if i in bits} == indices
    assert len(bits) == len(indices)
    assert bits.is_full() == (count == 1)
    assert Bits.full(count).is_full() and len(Bits.full(count)) == count
    padded = bytearray(Bits.full(count).to_bytes())
    if count % 8:
        padded[-1] = 0xFF  # stray bits past the count: ignored
    assert len(Bits.parse(bytes(padded), count)) == count
    with pytest.raises(ValueError, match="has"):
        Bits.parse(raw + b"\0", count)
    union = Bits.union(count, [Bits.parse(raw, count), Bits.parse(bitmap([0], count), count)])
    assert len(union) == len(indices | {0})
