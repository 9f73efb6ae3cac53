"""The file synchroniser end to end over real ZeroMQ sockets on 127.0.0.1 random ports."""

from __future__ import annotations

import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import wait_for

from farm.filesync import (
    FileClient,
    FileServer,
    Manifest,
    Store,
    SyncError,
    TransferError,
    UnsafeFile,
    UploadResult,
    VerifyError,
    build_manifest,
)
from farm.filesync.hashing import MIN_BLOCK, hash_block
from farm.filesync.published import Place
from farm.protocol import PROTOCOL_VERSION, T, pack

BIG = 40 * MIN_BLOCK  # 5 MiB: 40 blocks of 128 KiB


def sync_concurrently(clients: list[FileClient], tmp_path: Path) -> list[BaseException]:
    """Each client syncs "assets" into tmp_path/job<i>, all at once; returns what they raised."""
    errors: queue.Queue[BaseException] = queue.Queue()

    def run(i: int) -> None:
        try:
            clients[i].sync("assets", tmp_path / f"job{i}")
        except BaseException as exc:
            errors.put(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return list(errors.queue)


def make_tree(root: Path, seed: int = 0) -> Path:
    rng = __import__("random").Random(seed)
    for i in range(12):
        path = root / f"small/{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(0, 20000)))
    (root / "big.bin").write_bytes(rng.randbytes(BIG))
    (root / "same-as-00.txt").write_bytes((root / "small/00.txt").read_bytes())
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    return root


def assert_same_tree(manifest: Manifest, src: Path, dest: Path) -> None:
    listed = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert listed == [e.path for e in manifest]
    for entry in manifest:
        assert (dest / entry.path).read_bytes() == (src / entry.path).read_bytes(), entry.path


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)  # closes what a failed test left open, then terminates


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src")


@pytest.fixture
def server(context: zmq.Context, src: Path) -> Iterator[FileServer]:
    with FileServer(context=context) as srv:
        srv.publish("assets", src, build_manifest(src))
        yield srv


@pytest.fixture
def open_client(
    context: zmq.Context, server: FileServer, tmp_path: Path
) -> Iterator[Callable[..., FileClient]]:
    """open_client(store_name="store", **options) -> a FileClient with its own Store, closed after."""
    opened: list[tuple[FileClient, Store]] = []

    def make(store_name: str = "store", max_bytes: int | None = None, **options: object) -> FileClient:
        store = Store(tmp_path / store_name, max_bytes=max_bytes)
        client = FileClient(server.endpoint, store, context=context, **options)  # type: ignore[arg-type]
        opened.append((client, store))
        return client

    yield make
    for client, store in opened:
        client.close()
        store.close()


def test_sync_gives_a_byte_identical_tree_hard_linked_from_the_cache(
    server: FileServer, open_client: Callable[..., FileClient], src: Path, tmp_path: Path
) -> None:
    client = open_client()
    manifest = client.sync("assets", tmp_path / "job")
    assert_same_tree(manifest, src, tmp_path / "job")
    assert client.last_materialize is not None and client.last_materialize.linked == len(manifest)
    assert client.store is not None
    for entry in manifest:
        job_file = os.stat(tmp_path / "job" / entry.path)
        assert (
            job_file.st_ino == os.stat(client.store.file_path(entry.digest)).st_ino
        )  # a link into the cache
        assert job_file.st_ino != os.stat(src / entry.path).st_ino  # never the controller's file
        assert not job_file.st_mode & 0o222  # read-only: a job cannot corrupt the cache through it
    assert os.stat(tmp_path / "job" / "run.sh").st_mode & 0o111
    assert client.counters.blocks_fetched == len({h for e in manifest for _, h, _, _ in e.blocks()})


def test_a_second_sync_of_an_unchanged_tree_sends_almost_nothing(
    open_client: Callable[..., FileClient], tmp_path: Path
) -> None:
    client = open_client()
    client.sync("assets", tmp_path / "job")
    before = (client.counters.bytes_sent + client.counters.bytes_received, client.counters.requests)
    client.sync("assets", tmp_path / "job")
    client.sync("assets", tmp_path / "job2")  # a fresh job folder needs no transfer either
    after = (client.counters.bytes_sent + client.counters.bytes_received, client.counters.requests)
    assert after[1] - before[1] == 2  # one manifest exchange per sync
    assert after[0] - before[0] < 1000
    assert client.last_materialize is not None and client.last_materialize.linked == 15


def test_a_restarted_agent_resyncs_without_transfer(
    open_client: Callable[..., FileClient], tmp_path: Path
) -> None:
    open_client().sync("assets", tmp_path / "job")
    again = open_client()  # same cache folder, new Store and client
    again.sync("assets", tmp_path / "job")
    assert again.counters.blocks_fetched == 0
    assert again.counters.bytes_received < 1000


def test_one_changed_byte_resends_one_block(
    server: FileServer, open_client: Callable[..., FileClient], src: Path, tmp_path: Path
) -> None:
    client = open_client()
    client.sync("assets", tmp_path / "job")
    with open(src / "big.bin", "r+b") as f:
        f.seek(BIG // 2 + 7)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    server.publish("assets", src, build_manifest(src))
    fetched, received = client.counters.blocks_fetched, client.counters.bytes_received
    manifest = client.sync("assets", tmp_path / "job")
    assert client.counters.blocks_fetched - fetched == 1
    assert client.counters.blocks_reused == 39  # the rest was copied, verified, from the old version
    assert client.counters.bytes_received - received < MIN_BLOCK + 10_000  # one block and the manifest
    assert_same_tree(manifest, src, tmp_path / "job")


class FlippingServer(FileServer):
    """Flips a byte of the first ``flips`` chunks it serves of one block (a wire fault)."""

    def __init__(self, victim: bytes, flips: int, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.victim, self.flips = victim, flips

    def read_chunk(self, place: Place, offset: int, length: int) -> bytes:
        data = super().read_chunk(place, offset, length)
        if place.entry.block_hash(place.index) == self.victim and self.flips > 0:
            self.flips -= 1
            data = bytes([data[0] ^ 1]) + data[1:]
        return data


def test_a_block_corrupted_on_the_wire_is_fetched_again(
    context: zmq.Context, src: Path, tmp_path: Path
) -> None:
    manifest = build_manifest(src)
    victim = manifest.get("big.bin").block_hash(3)  # type: ignore[union-attr]
    with FlippingServer(victim, 2, context=context) as srv, Store(tmp_path / "store") as store:
        srv.publish("assets", src, manifest)
        with FileClient(srv.endpoint, store, context=context) as client:
            client.sync("assets", tmp_path / "job")
            assert client.counters.blocks_rejected == 2
        assert_same_tree(manifest, src, tmp_path / "job")


def test_a_block_always_corrupted_fails_and_is_never_used(
    context: zmq.Context, src: Path, tmp_path: Path
) -> None:
    manifest = build_manifest(src)
    big = manifest.get("big.bin")
    assert big is not None
    with FlippingServer(big.block_hash(3), 100, context=context) as srv, Store(tmp_path / "store") as store:
        srv.publish("assets", src, manifest)
        client = FileClient(srv.endpoint, store, context=context, retries=2)
        with client, pytest.raises(VerifyError, match="failed verification 3 times"):
            client.sync("assets", tmp_path / "job")
        assert big.digest not in store
        assert not (tmp_path / "job" / "big.bin").exists()


def sync_then_corrupt_the_cache(
    client: FileClient, tmp_path: Path, offset: int, garbage: bytes
) -> tuple[Manifest, Path, os.stat_result]:
    """Sync into ``job``, then overwrite bytes of big.bin's cache file (made writable for it);
    returns the manifest, the cache file and its stat from before."""
    manifest = client.sync("assets", tmp_path / "job")
    assert client.store is not None
    cached = client.store.file_path(manifest.get("big.bin").digest)  # type: ignore[union-attr]
    st = os.stat(cached)
    os.chmod(cached, 0o644)
    with open(cached, "r+b") as f:
        f.seek(offset)
        f.write(garbage)
    return manifest, cached, st


def test_a_block_corrupted_in_the_cache_is_fetched_again(
    open_client: Callable[..., FileClient], src: Path, tmp_path: Path
) -> None:
    client = open_client()
    # bit rot, or a job writing through its hard link
    manifest, _, _ = sync_then_corrupt_the_cache(client, tmp_path, 5 * MIN_BLOCK, b"\0garbage\0")
    fetched = client.counters.blocks_fetched
    client.sync("assets", tmp_path / "job2")
    assert client.counters.blocks_fetched - fetched == 40
    assert_same_tree(manifest, src, tmp_path / "job2")


def test_cache_corruption_hidden_from_the_quick_check_is_caught_by_verify(
    open_client: Callable[..., FileClient], src: Path, tmp_path: Path
) -> None:
    client = open_client()
    manifest, cached, st = sync_then_corrupt_the_cache(client, tmp_path, 0, b"X")
    assert client.store is not None
    os.chmod(cached, st.st_mode)
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns))  # deliberately hide the change
    with pytest.raises(SyncError, match="not in the cache"):
        client.store.materialize(manifest, tmp_path / "job2", verify=True)
    client.sync("assets", tmp_path / "job2", verify=True)  # fetches it again
    assert_same_tree(manifest, src, tmp_path / "job2")


class Stopped(Exception):
    """Raised by a `stop_after` progress callback: the transfer is cut off there."""


def stop_after(blocks: int) -> Callable[[object], None]:
    """A progress callback that interrupts a transfer once ``blocks`` blocks are done."""

    def check(progress: object) -> None:
        if getattr(progress, "blocks_done", 0) >= blocks:
            raise Stopped

    return check


def test_an_interrupted_transfer_resumes_where_it_stopped(
    open_client: Callable[..., FileClient], src: Path, tmp_path: Path
) -> None:
    # one 128 KiB block per request and one request in flight: the stop point is exact
    first = open_client(chunk_size=MIN_BLOCK, window=MIN_BLOCK)
    with pytest.raises(Stopped):
        first.sync("assets", tmp_path / "job", progress=stop_after(10))
    assert first.counters.blocks_fetched == 10
    first.close()
    assert first.store is not None
    first.store.close()  # the agent stops; its partial file stays in the cache

    again = open_client()
    manifest = again.sync("assets", tmp_path / "job")
    unique_blocks = len({h for e in manifest for _, h, _, _ in e.blocks()})
    assert again.counters.blocks_fetched == unique_blocks - 10
    assert again.counters.blocks_resumed == 10  # verified in the partial file, not fetched
    assert_same_tree(manifest, src, tmp_path / "job")


def test_lru_eviction_keeps_the_cache_under_its_limit(
    server: FileServer, open_client: Callable[..., FileClient], tmp_path: Path
) -> None:
    other = make_tree(tmp_path / "other", seed=1)
    server.publish("other", other, build_manifest(other))
    limit = 7 * 1024 * 1024  # one tree (about 5.2 MB) fits, two do not
    client = open_client(max_bytes=limit)
    assert client.store is not None
    first = client.sync("assets", tmp_path / "job1")
    client.sync("other", tmp_path / "job2")
    assert client.store.size() <= limit
    assert client.store.check(e.digest for e in first.entries if e.size > 100_000) == {}  # the older, evicted
    fetched = client.counters.blocks_fetched
    client.sync("assets", tmp_path / "job3")  # evicted files come back over the wire
    assert client.counters.blocks_fetched - fetched >= 40
    assert client.store.size() <= limit
    assert (tmp_path / "job1" / "big.bin").stat().st_size == BIG  # a job's links outlive eviction


def test_two_agents_fetching_at_once_both_complete(
    server: FileServer, open_client: Callable[..., FileClient], src: Path, tmp_path: Path
) -> None:
    clients = [open_client(f"store{i}", chunk_size=64 * 1024, window=256 * 1024) for i in range(2)]
    errors = sync_concurrently(clients, tmp_path)
    assert not errors, errors[0]
    manifest = server.published("assets")
    assert manifest is not None
    for i in range(2):
        assert_same_tree(manifest, src, tmp_path / f"job{i}")


def test_garbled_frames_leave_the_server_serving(
    context: zmq.Context,
    server: FileServer,
    open_client: Callable[..., FileClient],
    src: Path,
    tmp_path: Path,
) -> None:
    hostile = context.socket(zmq.DEALER)
    hostile.linger = 0
    hostile.connect(server.endpoint)
    head = bytes((PROTOCOL_VERSION, T.FS_REQUEST))

    def request(body: object, *payloads: bytes) -> list[bytes]:
        return [head, msgpack.packb(body, use_bin_type=True), *payloads]

    dropped = [
        [b"x"],
        [b"", b""],
        [bytes((9, T.FS_REQUEST)), b"\x80"],  # wrong protocol version
        [bytes((PROTOCOL_VERSION, 250)), b"\x80"],  # unknown type
        [bytes((PROTOCOL_VERSION, T.HELLO)), b"\x80"],  # a job-socket message
        [head, b"\xc1\xc1"],  # not msgpack
        [head, msgpack.packb([1, 2])],  # not a map
        request({"op": "nope", "rid": 1}),
        request({"op": "get", "rid": "one", "items": []}),
        request({"op": "get", "rid": -5, "items": []}),
        request({"op": "offer", "rid": 1, "token": ""}),
        [head, msgpack.packb({"op": "get", "rid": 1, "items": [[msgpack.ExtType(3, b"")]]})],
    ]
    answered = [
        request({"op": "get", "rid": 101, "items": [[b"\0" * 32, 0, 10]]}),  # unknown block
        request({"op": "get", "rid": 102, "items": [[b"short", 0, 10]]}),
        request({"op": "get", "rid": 103, "items": [[b"\0" * 32, 0, 1 << 30]]}),  # too big
        request({"op": "get", "rid": 104, "items": [[1, 2]]}),
        request({"op": "get", "rid": 105, "items": []}),
        request({"op": "manifest", "rid": 106, "tree": "../../etc"}),
        request({"op": "offer", "rid": 107, "token": "unexpected"}, b"\x80"),
        request({"op": "put", "rid": 108, "token": "unexpected", "items": [[b"\0" * 32, 0]]}, b"data"),
        request({"op": "commit", "rid": 109, "token": "unexpected"}),
    ]
    for frames in dropped + answered:
        hostile.send_multipart(frames)
    replies = {}
    for _ in answered:
        assert hostile.poll(30_000)
        frames = hostile.recv_multipart()
        body = msgpack.unpackb(frames[1])
        replies[body["rid"]] = body
    assert sorted(replies) == list(range(101, 110))
    assert not any(body["ok"] for body in replies.values())
    assert "no published tree" in replies[101]["error"] and "no upload is expected" in replies[107]["error"]
    wait_for(lambda: server.counters.dropped >= len(dropped))
    hostile.close()
    client = open_client()
    manifest = client.sync("assets", tmp_path / "job")
    assert_same_tree(manifest, src, tmp_path / "job")


def test_a_client_refuses_a_manifest_with_unsafe_paths(context: zmq.Context, tmp_path: Path) -> None:
    """A hostile or broken server cannot make an agent write outside its job folder."""
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    evil = msgpack.packb({"v": 1, "files": [["../escape", 1, 1, 0o644, MIN_BLOCK, hash_block(b"x")]]})

    def serve_one() -> None:
        ident, _, body = router.recv_multipart()
        rid = msgpack.unpackb(body)["rid"]
        router.send_multipart(
            [ident, *pack(T.FS_REPLY, {"rid": rid, "ok": True, "id": "x", "same": False}), evil]
        )

    thread = threading.Thread(target=serve_one)
    thread.start()
    with (
        Store(tmp_path / "store") as store,
        FileClient(f"tcp://127.0.0.1:{port}", store, context=context) as c,
        pytest.raises(SyncError, match="outside"),
    ):
        c.sync("assets", tmp_path / "job")
    thread.join()
    router.close()
    assert not (tmp_path / "escape").exists()


# -- uploads: job outputs and submitted projects -----------------------------------------


def test_upload_sends_only_the_blocks_the_server_lacks(
    context: zmq.Context, server: FileServer, src: Path, tmp_path: Path
) -> None:
    local = make_tree(tmp_path / "local")  # the same content as the published tree...
    (local / "new.txt").write_bytes(b"a new file")
    with open(local / "big.bin", "r+b") as f:  # ... with one block of the large file changed
        f.seek(MIN_BLOCK * 7)
        f.write(b"edited")
    results: queue.Queue[UploadResult] = queue.Queue()
    server.expect_upload("project-1", tmp_path / "received", on_done=results.put)
    with FileClient(server.endpoint, context=context) as client:
        manifest = client.upload("project-1", local)
        assert client.counters.blocks_sent == 2
        assert client.counters.bytes_sent < 2 * MIN_BLOCK
    result = results.get(timeout=30)
    assert result.ok and result.manifest == manifest and result.error is None
    assert_same_tree(manifest, local, tmp_path / "received")
    assert os.stat(tmp_path / "received" / "run.sh").st_mode & 0o777 == 0o755
    assert not list((tmp_path / "received").glob(".farm-upload-*"))


def test_job_outputs_upload_and_a_second_upload_needs_a_new_token(
    context: zmq.Context, server: FileServer, tmp_path: Path
) -> None:
    outputs = tmp_path / "out"
    (outputs / "tiles/3").mkdir(parents=True)
    (outputs / "tiles/3/1.png").write_bytes(os.urandom(300_000))
    (outputs / "log.txt").write_bytes(b"rendered")
    results: queue.Queue[UploadResult] = queue.Queue()
    server.expect_upload("lease-7", tmp_path / "staged", on_done=results.put)
    with FileClient(server.endpoint, context=context) as client:
        manifest = client.upload("lease-7", outputs)
        assert client.counters.blocks_sent == 4
        with pytest.raises(TransferError, match="no upload is expected"):
            client.upload("lease-7", outputs)
    assert results.get(timeout=30).ok
    assert_same_tree(manifest, outputs, tmp_path / "staged")


def test_outputs_failing_verification_are_reported_as_a_failure(
    context: zmq.Context, server: FileServer, tmp_path: Path
) -> None:
    outputs = tmp_path / "out"
    outputs.mkdir()
    (outputs / "frame.exr").write_bytes(os.urandom(200_000))
    manifest = build_manifest(outputs)
    (outputs / "frame.exr").write_bytes(os.urandom(200_000))  # changed after it was described
    results: queue.Queue[UploadResult] = queue.Queue()
    server.expect_upload("lease-8", tmp_path / "staged", on_done=results.put)
    with (
        FileClient(server.endpoint, context=context) as client,
        pytest.raises(VerifyError, match=r"frame\.exr"),
    ):
        client.upload("lease-8", outputs, manifest=manifest)
    result = results.get(timeout=30)
    assert not result.ok and result.error is not None and "verification" in result.error
    assert not (tmp_path / "staged" / "frame.exr").exists()
    assert server.counters.uploads_failed == 1


def test_unsafe_uploads_are_refused_on_both_sides(
    context: zmq.Context, server: FileServer, tmp_path: Path
) -> None:
    outputs = tmp_path / "out"
    outputs.mkdir()
    (outputs / "ok.txt").write_bytes(b"fine")
    os.symlink("/etc/passwd", outputs / "passwd")
    server.expect_upload("lease-9", tmp_path / "staged")
    with FileClient(server.endpoint, context=context) as client:
        with pytest.raises(UnsafeFile, match="passwd: symlink leads outside"):
            client.upload("lease-9", outputs)  # refused before anything is sent
        os.unlink(outputs / "passwd")
        os.mkfifo(outputs / "pipe")
        with pytest.raises(UnsafeFile, match="pipe: a fifo"):
            client.upload("lease-9", outputs)
        os.unlink(outputs / "pipe")

        # a receiving folder with a symlink leading out: the server refuses to write through it
        staged = tmp_path / "staged2"
        staged.mkdir()
        os.symlink(tmp_path / "elsewhere", staged / "ok.txt")
        results: queue.Queue[UploadResult] = queue.Queue()
        server.expect_upload("lease-10", staged, on_done=results.put)
        with pytest.raises(UnsafeFile, match="outside"):
            client.upload("lease-10", outputs)
    result = results.get(timeout=30)
    assert not result.ok and "outside" in (result.error or "")
    assert not (tmp_path / "elsewhere").exists()


def test_crafted_upload_manifests_are_refused(
    context: zmq.Context, server: FileServer, tmp_path: Path
) -> None:
    results: queue.Queue[UploadResult] = queue.Queue()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(server.endpoint)
    for rid, path in enumerate(["../escape", "/etc/passwd", "a/../../b", ".farm-upload-x/y"]):
        token = f"crafted-{rid}"
        server.expect_upload(token, tmp_path / "staged", on_done=results.put)
        manifest = msgpack.packb({"v": 1, "files": [[path, 1, 1, 0o644, MIN_BLOCK, hash_block(b"x")]]})
        body = {"op": "offer", "rid": rid, "token": token}
        dealer.send_multipart([*pack(T.FS_REQUEST, body), manifest])
        assert dealer.poll(30_000)
        reply = msgpack.unpackb(dealer.recv_multipart()[1])
        assert not reply["ok"], path
        result = results.get(timeout=30)
        assert not result.ok and result.token == token
    dealer.close()
    assert not (tmp_path / "escape").exists() and not (tmp_path / "b").exists()


def test_socket_setup_carries_curve_encryption(context: zmq.Context, src: Path, tmp_path: Path) -> None:
    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()

    def server_setup(sock: zmq.Socket) -> None:
        sock.curve_secretkey = server_secret
        sock.curve_publickey = server_public
        sock.curve_server = True

    def client_setup(sock: zmq.Socket) -> None:
        sock.curve_secretkey = client_secret
        sock.curve_publickey = client_public
        sock.curve_serverkey = server_public

    with FileServer(context=context, socket_setup=server_setup) as srv, Store(tmp_path / "store") as store:
        srv.publish("assets", src, build_manifest(src))
        with FileClient(srv.endpoint, store, context=context, socket_setup=client_setup) as client:
            manifest = client.sync("assets", tmp_path / "job")
        plain = FileClient(srv.endpoint, store, context=context, timeout=0.5)
        with plain, pytest.raises(TransferError, match="no answer"):  # a client without keys gets nothing
            plain.fetch_manifest("assets")
    assert_same_tree(manifest, src, tmp_path / "job")


def test_symlinks_inside_a_published_tree_are_served_as_files(
    server: FileServer, open_client: Callable[..., FileClient], src: Path, tmp_path: Path
) -> None:
    os.symlink("small/03.txt", src / "alias.txt")
    server.publish("assets", src, build_manifest(src))
    manifest = open_client().sync("assets", tmp_path / "job")
    assert not (tmp_path / "job" / "alias.txt").is_symlink()
    assert (tmp_path / "job" / "alias.txt").read_bytes() == (src / "small/03.txt").read_bytes()
    assert_same_tree(manifest, src, tmp_path / "job")


def test_agents_sharing_one_cache_folder_fetch_at_once(
    context: zmq.Context, server: FileServer, src: Path, tmp_path: Path
) -> None:
    """Agents on one host share the user's cache: concurrent fetches of the same files stay correct."""
    stores = [Store(tmp_path / "shared-cache") for _ in range(3)]
    clients = [FileClient(server.endpoint, s, context=context, chunk_size=64 * 1024) for s in stores]
    errors = sync_concurrently(clients, tmp_path)
    for client, store in zip(clients, stores, strict=True):
        client.close()
        store.close()
    assert not errors, errors[0]
    manifest = server.published("assets")
    assert manifest is not None
    for i in range(3):
        assert_same_tree(manifest, src, tmp_path / f"job{i}")
    with Store(tmp_path / "shared-cache") as store:  # the shared cache is consistent afterwards
        assert len(store.check(e.digest for e in manifest)) == len(manifest.unique_files())
        assert store.size() == sum(e.size for e in manifest.unique_files())


def test_a_client_over_its_request_bound_gets_an_answer_not_silence(
    context: zmq.Context, server: FileServer
) -> None:
    manifest = server.published("assets")
    assert manifest is not None
    block = manifest.get("run.sh").block_hash(0)  # type: ignore[union-attr]
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(server.endpoint)
    for rid in range(100):
        dealer.send_multipart(pack(T.FS_REQUEST, {"op": "get", "rid": rid, "items": [[block, 0, 18]]}))
    answers = {}
    for _ in range(100):
        assert dealer.poll(30_000)
        frames = dealer.recv_multipart()
        body = msgpack.unpackb(frames[1])
        answers[body["rid"]] = frames[2] if body["ok"] else body["error"]
    dealer.close()
    assert sorted(answers) == list(range(100))
    assert all(a == b"#!/bin/sh\necho hi\n" or "too many requests" in a for a in answers.values())


def test_a_file_replaced_by_rename_and_republished_is_served_anew(
    server: FileServer, open_client: Callable[..., FileClient], src: Path, tmp_path: Path
) -> None:
    client = open_client()
    client.sync("assets", tmp_path / "job")  # the server now holds big.bin open
    (src / "big.tmp").write_bytes(os.urandom(BIG))
    os.replace(src / "big.tmp", src / "big.bin")  # how editors save
    server.publish("assets", src, build_manifest(src))
    manifest = client.sync("assets", tmp_path / "job")
    assert_same_tree(manifest, src, tmp_path / "job")


def test_a_file_changed_after_publishing_is_refused_not_served(
    server: FileServer, open_client: Callable[..., FileClient], src: Path, tmp_path: Path
) -> None:
    with open(src / "big.bin", "r+b") as f:
        f.write(b"changed behind the server's back")
    with pytest.raises(TransferError, match=r"big\.bin changed since it was published"):
        open_client().sync("assets", tmp_path / "job")


def test_an_interrupted_upload_resumes_where_it_stopped(
    context: zmq.Context, server: FileServer, tmp_path: Path
) -> None:
    outputs = tmp_path / "out"
    outputs.mkdir()
    (outputs / "render.exr").write_bytes(os.urandom(12 * MIN_BLOCK))
    results: queue.Queue[UploadResult] = queue.Queue()
    server.expect_upload("lease-11", tmp_path / "staged", on_done=results.put)
    with FileClient(server.endpoint, context=context, chunk_size=MIN_BLOCK, window=MIN_BLOCK) as client:
        with pytest.raises(Stopped):
            client.upload("lease-11", outputs, progress=stop_after(5))
        assert client.counters.blocks_sent == 5
    with FileClient(server.endpoint, context=context) as again:  # a restarted agent
        manifest = again.upload("lease-11", outputs)
        assert again.counters.blocks_sent == 7
    assert results.get(timeout=30).ok
    assert_same_tree(manifest, outputs, tmp_path / "staged")


def test_farm_security_plugs_in_through_socket_setup(context: zmq.Context, src: Path, tmp_path: Path) -> None:
    """The controller's CURVE keys and ZAP allow list (farm.security) on the file socket."""
    from farm.security import ClientSecurity, KeyStore, ServerSecurity

    keys = KeyStore(tmp_path / "keys")
    for name in ("controller", "node", "stranger"):
        keys.create(name)
    keys.allow("node")
    security = ServerSecurity(keys.root, context=context)
    try:
        with (
            FileServer(context=context, socket_setup=security.socket_setup) as srv,
            Store(tmp_path / "store") as store,
        ):
            srv.publish("assets", src, build_manifest(src))
            node = ClientSecurity(keys.root, "node").socket_setup
            with FileClient(srv.endpoint, store, context=context, socket_setup=node) as client:
                manifest = client.sync("assets", tmp_path / "job")
            stranger = ClientSecurity(keys.root, "stranger").socket_setup
            refused = FileClient(srv.endpoint, store, context=context, socket_setup=stranger, timeout=0.5)
            with refused, pytest.raises(TransferError, match="no answer"):
                refused.fetch_manifest("assets")
    finally:
        security.stop()
    assert_same_tree(manifest, src, tmp_path / "job")


def test_a_request_that_cannot_be_sent_fails_in_the_timeout(context: zmq.Context, tmp_path: Path) -> None:
    """A client whose connection no server takes (here: nothing listens, and `IMMEDIATE` keeps the
    DEALER from queueing; in the field: a server that refused its key) cannot send: its request
    fails after `timeout`, naming the server, instead of blocking in the send forever (as it did
    once in CI)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"tcp://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: refused
        with (
            Store(tmp_path / "store") as store,
            FileClient(nobody, store, context=context, timeout=0.5,
                       socket_setup=lambda sock: sock.setsockopt(zmq.IMMEDIATE, 1)) as client,
            pytest.raises(TransferError, match=f"no answer from the file server at {nobody} in 0.5 s"),
        ):
            client.fetch_manifest("assets")


def test_a_server_that_cannot_bind_says_so(context: zmq.Context, server: FileServer) -> None:
    taken = FileServer(server.endpoint, context=context)
    with pytest.raises(SyncError, match="cannot bind"):
        taken.start()
