"""`FileClient`: fetches trees into a `Store` and uploads local trees, over one DEALER socket.

Flow control is by byte credit: at most ``window`` bytes (16 MiB) of requests are outstanding, in
requests of at most ``chunk_size`` bytes (4 MiB; small blocks are batched into one request,
large ones split), so memory stays bounded whatever the file sizes. Every block is
verified as it lands; a bad one is asked for again, up to ``retries`` times. Blocks
already in the cache, in a partial file from an interrupted transfer, or elsewhere in
the tree are never fetched again.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from farm.errors import ProtocolError
from farm.filesync import wire
from farm.filesync.assembly import Assembly, Outcome
from farm.filesync.errors import (
    DiskRefused,
    ManifestError,
    NoAnswer,
    SyncError,
    TransferError,
    UnsafeFile,
    VerifyError,
)
from farm.filesync.hashcache import HashCache
from farm.filesync.hashing import HASH_LEN
from farm.filesync.limits import DEFAULT_LIMITS, Limits, MiB
from farm.filesync.manifest import FileEntry, Manifest
from farm.filesync.materialize import MaterializeStats, MissingFromCache, Sources
from farm.filesync.materialize import materialize as materialize_tree
from farm.filesync.resolve import Resolver
from farm.filesync.scan import build_manifest
from farm.filesync.store import Store

log = logging.getLogger(__name__)

SocketSetup = Callable[[zmq.Socket], None]
MAX_IN_FLIGHT = 32  # requests; a server queues at most 64 per client (FileServer max_queue)


@dataclass
class ClientCounters:
    """What went over the wire and where blocks came from (for tests and benchmarks)."""

    requests: int = 0
    bytes_sent: int = 0  # every frame sent, headers included
    bytes_received: int = 0  # every frame received, headers included
    blocks_fetched: int = 0  # received from the server and verified
    blocks_sent: int = 0  # uploaded and accepted
    blocks_reused: int = 0  # copied from elsewhere in the cache, verified
    blocks_resumed: int = 0  # found verified in a partial file
    blocks_cached: int = 0  # in files the cache held whole already
    blocks_rejected: int = 0  # failed verification on arrival
    files_stored: int = 0


@dataclass
class Progress:
    blocks_done: int
    blocks_total: int
    bytes_done: int


ProgressFn = Callable[[Progress], None]


@dataclass
class _Request:
    items: list[tuple[bytes, int, int]]  # (block hash, offset in block, length)

    @property
    def cost(self) -> int:
        return sum(length for _, _, length in self.items)


class FileClient:
    """Talks to one `FileServer`. Not thread-safe: use it from one thread.

    ``store`` is where fetched files go (required for `fetch`/`sync`, not for `upload`);
    ``socket_setup`` is applied to the socket before it connects (CURVE keys).
    """

    def __init__(
        self,
        endpoint: str,
        store: Store | None = None,
        *,
        context: zmq.Context | None = None,
        socket_setup: SocketSetup | None = None,
        limits: Limits = DEFAULT_LIMITS,
        chunk_size: int = 4 * MiB,
        window: int = 16 * MiB,
        timeout: float = 60.0,
        retries: int = 3,
    ) -> None:
        if not 0 < chunk_size <= limits.max_chunk:
            raise ValueError(f"chunk_size must be in 1..{limits.max_chunk}")
        self.endpoint = endpoint
        self.store = store
        self.limits = limits
        self.chunk_size = chunk_size
        self.window = max(window, chunk_size)
        self.timeout = timeout
        self.retries = retries
        self.counters = ClientCounters()
        self.context = context or zmq.Context.instance()
        self._sock = self.context.socket(zmq.DEALER)
        self._sock.linger = 0
        # a server that refused our key leaves no peer: a DEALER's send then blocks, forever without this
        self._sock.sndtimeo = max(1, int(timeout * 1000))
        self._sock.setsockopt(zmq.MAXMSGSIZE, limits.max_manifest_bytes + 65536)
        if socket_setup is not None:
            socket_setup(self._sock)
        self._sock.connect(endpoint)
        self._rid = secrets.randbelow(2**48)  # replies to an earlier client on this identity never match
        self.last_materialize: MaterializeStats | None = None

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> FileClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- download -------------------------------------------------------------------

    def fetch_manifest(self, tree: str) -> Manifest:
        """The server's current manifest of ``tree`` (one small exchange when unchanged)."""
        key = f"{self.endpoint}#{tree}"
        known = self.store.tree_manifest(key) if self.store is not None else None
        body, payloads = self._call(wire.MANIFEST, {"tree": tree, "have": known.id if known else None})
        if body["same"]:
            if known is None or body["id"] != known.id:
                raise TransferError(
                    f"server says manifest {body['id']} is unchanged, but it is not known here"
                )
            manifest = known
        else:
            if len(payloads) != 1:
                raise TransferError("manifest reply without the manifest")
            manifest = Manifest.from_bytes(wire.view(payloads[0]), self.limits)
            if manifest.id != body["id"]:
                raise TransferError(f"manifest id {manifest.id} does not match the announced {body['id']}")
        if self.store is not None:
            self.store.remember_tree(key, manifest)
        return manifest

    def fetch(self, manifest: Manifest, *, progress: ProgressFn | None = None) -> None:
        """Bring every file of ``manifest`` into the store, fetching only blocks it lacks."""
        self._fetch(manifest, progress)

    def _fetch(self, manifest: Manifest, progress: ProgressFn | None) -> Sources | None:
        """`fetch`; returns the cache's files (checked) when all were there already."""
        store = self._need_store()
        unique = manifest.unique_files()
        digests = [e.digest for e in unique]
        with store.pinned(digests):
            have = store.check_stat(digests)
            todo = [e for e in unique if e.digest not in have]
            self.counters.blocks_cached += sum(e.block_count for e in unique if e.digest in have)
            store.reserve(unique, sum(e.size for e in todo))  # the size limit holds during the fetch too
            if todo:
                store.adopt_partials(e.digest for e in todo)
                assembly = store.assembly(todo)
                try:
                    assembly.prepare()
                    self.counters.blocks_resumed += assembly.resumed
                    self.counters.blocks_reused += assembly.reused
                    self._store_ready(assembly)
                    self._fetch_blocks(assembly, progress)
                    if not assembly.complete:
                        raise TransferError(f"{len(assembly.incomplete())} files could not be completed")
                finally:
                    assembly.close()
                    store.flush()
            store.evict(keep=digests)
        return None if todo else have

    def sync(
        self, tree: str, dest: Path | str, *, progress: ProgressFn | None = None, **materialize: bool
    ) -> Manifest:
        """Fetch ``tree`` and give ``dest`` its files from the cache (hard links; see `Store.materialize`)."""
        store = self._need_store()
        manifest = self.fetch_manifest(tree)
        for attempt in (1, 2):
            have = self._fetch(manifest, progress)
            try:
                self.last_materialize = materialize_tree(
                    store, manifest, Path(dest), sources=have, **materialize
                )
                break
            except MissingFromCache:
                if attempt == 2:
                    raise
                log.info(
                    "cache files vanished while materialising %s (evicted by another agent?); fetching again",
                    tree,
                )
        return manifest

    def _fetch_blocks(self, assembly: Assembly, progress: ProgressFn | None) -> None:
        missing = assembly.missing()
        lengths = dict(missing)
        total, done, done_bytes = len(missing), 0, 0
        bad: Counter[bytes] = Counter()
        queue = deque(self._chunked((h, 0, n) for h, n in missing))

        def on_reply(request: _Request, body: dict[str, Any], payloads: list[wire.Frame]) -> None:
            nonlocal done, done_bytes
            if len(payloads) != len(request.items):
                raise TransferError(f"asked for {len(request.items)} chunks, got {len(payloads)}")
            for (block_hash, offset, length), frame in zip(request.items, payloads, strict=True):
                data = wire.view(frame)
                if len(data) != length:
                    raise TransferError(f"asked for {length} bytes, got {len(data)}")
                outcome = assembly.accept(block_hash, offset, data)
                if outcome is Outcome.DONE:
                    self.counters.blocks_fetched += 1
                    done += 1
                    done_bytes += lengths[block_hash]
                elif outcome is Outcome.BAD:
                    self.counters.blocks_rejected += 1
                    if offset + length == lengths[block_hash]:  # the block's last chunk: ask again, once
                        bad[block_hash] += 1
                        if bad[block_hash] > self.retries:
                            raise VerifyError(
                                f"block {block_hash.hex()[:16]} failed verification {bad[block_hash]} times"
                            )
                        again = self._chunked([(block_hash, 0, lengths[block_hash])])
                        queue.extendleft(reversed(list(again)))
            self._store_ready(assembly)
            if progress is not None:
                progress(Progress(done, total, done_bytes))

        self._pipeline(queue, lambda r: (wire.GET, {"items": [list(i) for i in r.items]}, []), on_reply)

    def _store_ready(self, assembly: Assembly) -> None:
        store = self._need_store()
        for entry, path, st in assembly.take_ready():
            assert st is not None  # the store's assemblies finish every file with its stat
            store.add(entry, path, st)
            self.counters.files_stored += 1

    # -- upload ---------------------------------------------------------------------

    def upload(
        self,
        token: str,
        root: Path | str,
        *,
        paths: Iterable[str] | None = None,
        manifest: Manifest | None = None,
        hash_cache: HashCache | None = None,
        progress: ProgressFn | None = None,
    ) -> Manifest:
        """Send the tree at ``root`` (or its ``paths``) to the upload the server expects as ``token``.

        Only blocks the server lacks are sent. Raises `VerifyError` if blocks keep failing
        verification (the file changed while being sent); the server then reports the
        upload as failed.
        """
        root = Path(root)
        if manifest is None:
            manifest = build_manifest(root, paths, hash_cache=hash_cache, limits=self.limits)
        body, payloads = self._call(wire.OFFER, {"token": token}, [manifest.to_bytes()])
        if len(payloads) != 1 or len(wire.view(payloads[0])) != body["need"] * HASH_LEN:
            raise TransferError("offer reply does not list the blocks it needs")
        need = bytes(wire.view(payloads[0]))
        where: dict[bytes, tuple[FileEntry, int]] = {}
        for entry in manifest:
            for index in range(entry.block_count):
                where.setdefault(entry.block_hash(index), (entry, index))
        wanted = [need[i : i + HASH_LEN] for i in range(0, len(need), HASH_LEN)]
        if any(h not in where for h in wanted):
            raise TransferError("server asked for a block that is not in the manifest")
        reader = _TreeReader(root)
        bad: Counter[bytes] = Counter()
        total, done = len(wanted), 0
        queue = deque(self._chunked((h, 0, where[h][0].block_length(where[h][1])) for h in wanted))

        def make(request: _Request) -> tuple[str, dict[str, Any], list[Any]]:
            data = [reader.read(*where[h], offset, length) for h, offset, length in request.items]
            return wire.PUT, {"token": token, "items": [[h, o] for h, o, _ in request.items]}, data

        def on_reply(request: _Request, body: dict[str, Any], payloads: list[wire.Frame]) -> None:
            nonlocal done
            rejected = set(body["bad"])
            for block_hash, offset, length in request.items:
                entry, index = where[block_hash]
                last = offset + length == entry.block_length(index)
                if block_hash in rejected and last:
                    self.counters.blocks_rejected += 1
                    bad[block_hash] += 1
                    if bad[block_hash] > self.retries:
                        error = (
                            f"{entry.path}: block {index} failed verification; did it change while uploading?"
                        )
                        self._abort(token, error)
                        raise VerifyError(error)
                    queue.extendleft(
                        reversed(list(self._chunked([(block_hash, 0, entry.block_length(index))])))
                    )
                elif last:
                    self.counters.blocks_sent += 1
                    done += 1
            if progress is not None:
                progress(Progress(done, total, 0))

        try:
            self._pipeline(queue, make, on_reply)
        except (VerifyError, DiskRefused):  # the upload failed there already: nothing to abort
            raise
        except SyncError as exc:
            self._abort(token, str(exc))
            raise
        finally:
            reader.close()
        self._call(wire.COMMIT, {"token": token})
        return manifest

    def _abort(self, token: str, error: str) -> None:
        try:
            self._call(wire.ABORT, {"token": token, "error": error})
        except SyncError as exc:
            log.debug("abort of upload %s not acknowledged: %s", token, exc)

    # -- request plumbing -----------------------------------------------------------

    def _chunked(self, blocks: Iterable[tuple[bytes, int, int]]) -> Iterator[_Request]:
        """Requests of at most ``chunk_size`` bytes: small blocks batched, large ones split."""
        batch: list[tuple[bytes, int, int]] = []
        batch_bytes = 0
        for block_hash, _, length in blocks:
            if length >= self.chunk_size:
                if batch:
                    yield _Request(batch)
                    batch, batch_bytes = [], 0
                for offset in range(0, length, self.chunk_size):
                    yield _Request([(block_hash, offset, min(self.chunk_size, length - offset))])
                continue
            if batch and (batch_bytes + length > self.chunk_size or len(batch) >= self.limits.max_items):
                yield _Request(batch)
                batch, batch_bytes = [], 0
            batch.append((block_hash, 0, length))
            batch_bytes += length
        if batch:
            yield _Request(batch)

    def _pipeline(
        self,
        queue: deque[_Request],
        make: Callable[[_Request], tuple[str, dict[str, Any], list[Any]]],
        on_reply: Callable[[_Request, dict[str, Any], list[wire.Frame]], None],
    ) -> None:
        """Keep up to ``window`` bytes of requests in flight until ``queue`` is empty and answered."""
        inflight: dict[int, tuple[str, _Request]] = {}
        outstanding = 0
        while queue or inflight:
            while queue and (
                not inflight or (outstanding + queue[0].cost <= self.window and len(inflight) < MAX_IN_FLIGHT)
            ):
                request = queue.popleft()
                op, fields, payloads = make(request)
                inflight[self._send(op, fields, payloads)] = (op, request)
                outstanding += request.cost
            rid, frames = self._recv(inflight)
            op, request = inflight.pop(rid)
            outstanding -= request.cost
            body, payloads = self._parse(frames, op)
            on_reply(request, body, payloads)

    def _call(
        self, op: str, fields: dict[str, Any], payloads: Sequence[Any] = ()
    ) -> tuple[dict[str, Any], list[wire.Frame]]:
        rid = self._send(op, fields, payloads)
        _, frames = self._recv({rid: None})
        return self._parse(frames, op)

    def _send(self, op: str, fields: dict[str, Any], payloads: Sequence[Any]) -> int:
        self._rid += 1
        frames = wire.request_frames(op, self._rid, fields, payloads)
        try:
            self._sock.send_multipart(frames, copy=True)  # cheaper than pyzmq's zero-copy (see FileServer._send)
        except zmq.Again:
            raise NoAnswer(f"no answer from the file server at {self.endpoint} in {self.timeout:g} s "
                                "(nothing could be sent: no connection took this client)") from None
        self.counters.requests += 1
        self.counters.bytes_sent += sum(len(f) for f in frames)
        return self._rid

    def _recv(self, waiting: dict[int, Any]) -> tuple[int, list[wire.Frame]]:
        """The next reply to one of ``waiting``; stale replies (to abandoned requests) are skipped."""
        while True:
            if not self._sock.poll(int(self.timeout * 1000)):
                raise NoAnswer(
                    f"no answer from the file server at {self.endpoint} in {self.timeout:g} s"
                )
            frames = self._sock.recv_multipart(copy=False)
            self.counters.bytes_received += sum(wire.frame_len(f) for f in frames)
            rid = wire.reply_rid(frames)
            if rid in waiting:
                return rid, frames
            log.debug("ignoring a reply to request %s, not waited for", rid)

    def _parse(self, frames: list[wire.Frame], op: str) -> tuple[dict[str, Any], list[wire.Frame]]:
        try:
            body, payloads = wire.parse_reply(frames, op)
        except ProtocolError as exc:
            raise TransferError(f"malformed reply from {self.endpoint}: {exc}") from None
        if not body["ok"]:
            error = _ERRORS.get(body.get("code") or "", TransferError)
            raise error(f"file server refused {op}: {body.get('error')}")
        return body, payloads

    def _need_store(self) -> Store:
        if self.store is None:
            raise SyncError("this FileClient has no store to fetch into")
        return self.store


_ERRORS: dict[str, type[SyncError]] = {
    wire.VERIFY: VerifyError,
    wire.UNSAFE: UnsafeFile,
    wire.BAD_MANIFEST: ManifestError,
    wire.DISK: DiskRefused,
}


class _TreeReader:
    """Reads upload data from the local tree, refusing paths that lead out of it."""

    def __init__(self, root: Path) -> None:
        self.resolver = Resolver(root)
        self._fds: OrderedDict[str, int] = OrderedDict()

    def read(self, entry: FileEntry, index: int, offset: int, length: int) -> bytes:
        fd = self._fds.get(entry.path)
        if fd is None:
            try:
                fd = os.open(self.resolver.path(entry.path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except (OSError, UnsafeFile) as exc:
                raise SyncError(f"{entry.path}: cannot be read for upload: {exc}") from None
            self._fds[entry.path] = fd
            if len(self._fds) > 32:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(entry.path)
        return os.pread(fd, length, index * entry.block_size + offset)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])
