"""`FileServer`: the controller's side of the file synchroniser, in its own thread and socket.

It serves manifests and blocks of published trees to agents and receives uploads (job
outputs, submitted projects) into folders the controller expects them in. Requests go
into per-client lanes served by deficit round robin (`FairQueue`), so many agents
fetching at once share the bandwidth; a client gets only as many replies as it asked
for, so its credit bounds what is queued for it. A garbled or hostile request is
logged and dropped (or answered with an error), never a crash.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from farm.errors import FarmError, ProtocolError
from farm.filesync import errors, wire
from farm.filesync.assembly import BlockSource
from farm.filesync.errors import DiskRefused, ManifestError, SyncError, UnsafeFile, VerifyError
from farm.filesync.fairqueue import FairQueue
from farm.filesync.hashing import hash_block
from farm.filesync.limits import DEFAULT_LIMITS, Limits
from farm.filesync.manifest import Manifest
from farm.filesync.published import Place, TreeIndex
from farm.filesync.receiver import OnDone, Upload, UploadResult
from farm.filesync.store import Store
from farm.paths import UnsafePath
from farm.protocol import HANDSHAKE_MS
from farm.safeopen import open_beneath
from farm.security import authenticated_id

log = logging.getLogger(__name__)

SocketSetup = Callable[[zmq.Socket], None]
Access = Callable[[wire.Request], str | None]  # why a request's key may not make it, or None
_SMALL_COST = 4096  # what a request without bulk data counts for in the fair queue
_MAX_DRAIN = 1000  # requests read per loop before serving, so reading never starves serving
_wake_ids = itertools.count()


@dataclass
class ServerCounters:
    requests: int = 0
    dropped: int = 0  # unparseable, over the client's bounds, or unsendable
    errors: int = 0  # answered with ok=False
    bytes_in: int = 0
    bytes_out: int = 0
    blocks_served: int = 0
    uploads_done: int = 0
    uploads_failed: int = 0


class FileServer:
    """Serves published trees and receives expected uploads on a ROUTER socket of its own.

    ``bind`` defaults to a random loopback port (see `endpoint` after `start`);
    ``socket_setup`` is applied to the socket before it binds (CURVE keys, ZAP domain).
    ``store`` (optional) is one more place to find blocks an uploader need not send.
    ``access(request)`` (optional) refuses a request its sender's key may not make (key roles).
    Thread-safe: `publish`, `expect_upload` and friends may be called from any thread.
    ``SERVES``: the operations this server answers (each an ``_on_<op>`` method); any other op
    of the protocol is refused as "not served here".
    """

    SERVES = frozenset({wire.MANIFEST, wire.GET, wire.OFFER, wire.PUT, wire.COMMIT, wire.ABORT})

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:*",
        *,
        context: zmq.Context | None = None,
        socket_setup: SocketSetup | None = None,
        limits: Limits = DEFAULT_LIMITS,
        store: Store | None = None,
        max_queue: int = 64,
        access: Access | None = None,
    ) -> None:
        self.bind = bind
        self.access = access
        self.context = context or zmq.Context.instance()
        self.socket_setup = socket_setup
        self.limits = limits
        self.store = store
        self.counters = ServerCounters()
        self._index = TreeIndex()
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()
        self._queue: FairQueue[wire.Request] = FairQueue(
            limits.max_chunk, max_items=max_queue, max_bytes=max_queue * limits.max_chunk
        )
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._verified: dict[str, set[bytes]] = {}  # per open file: block hashes checked against its manifest
        self._wake_addr = f"inproc://farm-filesync-wake-{os.getpid()}-{next(_wake_ids)}"
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._endpoint: str | None = None
        self._unserved = 0  # requests for ops this server does not serve (logged throttled)

    # -- lifetime -------------------------------------------------------------------

    def start(self) -> FileServer:
        self._thread = threading.Thread(target=self._run, name="farm-filesync-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise SyncError(f"file server cannot bind {self.bind}: {self._startup_error}")
        return self

    @property
    def endpoint(self) -> str:
        """The bound endpoint, with the real port (for clients to connect to)."""
        if self._endpoint is None:
            raise SyncError("file server is not started")
        return self._endpoint

    def close(self) -> None:
        if self._thread is None:
            return
        wake = self.context.socket(zmq.PAIR)
        wake.linger = 0
        wake.connect(self._wake_addr)
        wake.send(b"stop")
        self._thread.join()
        wake.close()
        self._thread = None
        with self._lock:
            uploads = list(self._uploads.values())
        for upload in uploads:
            upload.close()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what is served and expected -------------------------------------------------

    def publish(self, tree: str, root: Path | str, manifest: Manifest) -> None:
        """Serve ``manifest`` (built from ``root``) as ``tree``; replaces an earlier version.

        Raises `SyncError` if ``root`` cannot be opened, or `UnsafeFile` if a component of it is a symlink.
        """
        with self._lock:
            try:
                self._index = self._index.with_tree(tree, Path(root), manifest)
            except UnsafePath as exc:
                raise UnsafeFile(f"cannot publish {root}: {exc}") from None
            except OSError as exc:
                raise SyncError(f"cannot publish {root}: {exc.strerror}") from None

    def unpublish(self, tree: str) -> None:
        with self._lock:
            self._index = self._index.without_tree(tree)

    def published(self, tree: str) -> Manifest | None:
        found = self._index.trees.get(tree)
        return found[1] if found else None

    def expect_upload(
        self,
        token: str,
        dest: Path | str,
        *,
        on_done: OnDone | None = None,
        max_bytes: int | None = None,
        max_files: int | None = None,
    ) -> None:
        """Accept one upload under ``token`` into ``dest``.

        ``on_done(UploadResult)`` is called from the server thread when it commits or
        fails (a block failing verification, an unsafe path, a limit): keep it short.
        """
        sources: list[BlockSource] = [_IndexSource(self)]
        if self.store is not None:
            sources.append(self.store)
        upload = Upload(
            token,
            Path(dest),
            limits=self.limits,
            sources=sources,
            on_done=on_done,
            max_bytes=max_bytes,
            max_files=max_files,
        )
        with self._lock:
            self._uploads[token] = upload

    def cancel_upload(self, token: str) -> None:
        with self._lock:
            upload = self._uploads.pop(token, None)
        if upload is not None:
            upload.close()

    # -- the server thread -----------------------------------------------------------

    def _run(self) -> None:
        sock = self.context.socket(zmq.ROUTER)
        wake = self.context.socket(zmq.PAIR)
        try:
            sock.linger = wake.linger = 0
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_manifest_bytes + 65536)
            sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)  # idle connections do not keep their descriptors
            if self.socket_setup is not None:
                self.socket_setup(sock)
            sock.bind(self.bind)
            self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            wake.bind(self._wake_addr)
        except Exception as exc:
            sock.close(linger=0)
            wake.close(linger=0)
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll(0 if self._queue else None))
                if wake in events:
                    break
                try:
                    if sock in events:
                        self._drain(sock)
                    for client, request in self._queue.pop_round():
                        self._serve(sock, client, request)
                except zmq.ContextTerminated:
                    break
                except Exception:  # a bug must not end the controller's file service
                    log.exception("file server loop error; carrying on")
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._verified.clear()
            sock.close(linger=0)
            wake.close(linger=0)

    def _drain(self, sock: zmq.Socket) -> None:
        for _ in range(_MAX_DRAIN):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.counters.bytes_in += sum(wire.frame_len(f) for f in frames)
            client = frames[0].bytes
            try:
                request = wire.parse_request(frames[1:])
            except ProtocolError as exc:
                self._drop(f"garbled request from {client.hex()[:12]}: {exc}")
                continue
            except Exception as exc:  # a check that missed a shape: still just a garbled request
                self._drop(f"garbled request from {client.hex()[:12]}: {type(exc).__name__}: {exc}")
                continue
            self.counters.requests += 1
            if request.op not in self.SERVES:  # another kind of file server's op (a peer's, the tracker's)
                self.counters.errors += 1
                self._log_refused(f"file-sync {request.op} from {client.hex()[:12]} is not served here")
                served = ", ".join(sorted(self.SERVES))
                error = f"{request.op} is not served here (this server serves {served})"
                self._send(sock, client, wire.error_frames(request.rid, error))
                continue
            request.user = authenticated_id(frames[1])
            refusal = self.access(request) if self.access is not None else None
            if refusal is not None:
                self.counters.errors += 1
                self._send(sock, client, wire.error_frames(request.rid, refusal, wire.KEY_ROLE))
                continue
            cost = sum(wire.frame_len(f) for f in request.payloads)
            if request.op == wire.GET:
                cost += sum(i[2] for i in request.body["items"] if len(i) == 3 and isinstance(i[2], int))
            cost = min(max(cost, _SMALL_COST), self.limits.max_chunk)  # an oversized ask is refused later
            if not self._queue.push(client, request, cost):
                self.counters.errors += 1
                error = f"too many requests in flight (at most {self._queue.max_items} per client)"
                self._send(sock, client, wire.error_frames(request.rid, error))

    def _drop(self, why: str) -> None:
        self.counters.dropped += 1
        if self.counters.dropped <= 100 or self.counters.dropped % 1000 == 0:
            log.warning("%s (%d dropped so far)", why, self.counters.dropped)

    def _log_refused(self, why: str) -> None:
        self._unserved += 1
        if self._unserved <= 10 or self._unserved % 1000 == 0:
            log.info("%s (%d such requests so far)", why, self._unserved)

    def _serve(self, sock: zmq.Socket, client: bytes, request: wire.Request) -> None:
        try:
            frames = self._handle(request)
        except (FarmError, UnsafePath) as exc:
            self.counters.errors += 1
            # a disk's refusal was said as the upload failed (`Upload.fail`): once
            log.log(logging.DEBUG if isinstance(exc, DiskRefused) else logging.INFO,
                    "file-sync %s refused: %s", request.op, exc)
            frames = wire.error_frames(request.rid, str(exc), _code(exc))
        except Exception as exc:  # a bug must not take the controller's file service down
            self.counters.errors += 1
            log.exception("file-sync %s failed", request.op)
            frames = wire.error_frames(request.rid, f"internal error: {type(exc).__name__}")
        self._send(sock, client, frames)

    def _send(self, sock: zmq.Socket, client: bytes, frames: list[Any]) -> None:
        try:
            # copied into zmq's buffers: pyzmq's zero-copy send hands every frame back through a
            # Python thread, which costs more than the copy (3.9 vs 0.9 CPU-s/GiB in 128 KiB frames)
            sock.send_multipart([client, *frames], zmq.NOBLOCK, copy=True)
        except zmq.Again:
            self._drop(f"client {client.hex()[:12]} is not reading its replies")
            return
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                self._queue.drop(client)  # gone: forget what it asked for
            else:
                self._drop(f"cannot reply to {client.hex()[:12]}: {exc}")
            return
        self.counters.bytes_out += sum(len(f) for f in frames)

    def _handle(self, request: wire.Request) -> list[Any]:
        handler = getattr(self, f"_on_{request.op}")
        return handler(request)  # type: ignore[no-any-return]

    # -- downloads ------------------------------------------------------------------

    def _on_manifest(self, request: wire.Request) -> list[Any]:
        tree = request.body["tree"]
        found = self._index.trees.get(tree)
        if found is None:
            raise SyncError(f"no tree named {tree[:200]!r} is published")
        _, manifest, raw = found
        if request.body.get("have") == manifest.id:
            return wire.reply_frames(request.rid, {"id": manifest.id, "same": True})
        return wire.reply_frames(request.rid, {"id": manifest.id, "same": False}, [raw])

    def _on_get(self, request: wire.Request) -> list[Any]:
        items = wire.get_items(request.body["items"], self.limits)
        index = self._index
        payloads = []
        for block_hash, offset, length in items:
            place = index.blocks.get(block_hash)
            if place is None:
                raise SyncError(f"block {block_hash.hex()[:16]} is in no published tree")
            if offset + length > place.length:
                raise ProtocolError(f"get: {offset}+{length} is past the end of a {place.length}-byte block")
            payloads.append(self.read_chunk(place, offset, length))
        self.counters.blocks_served += len(items)
        return wire.reply_frames(request.rid, None, payloads)

    def read_chunk(self, place: Place, offset: int, length: int) -> bytes:
        """Bytes of a published block, read from the controller's disk (a hook for tests).

        The first read of a block through an open file hashes the whole block against the
        manifest, so what is served is what was published, never what a path leads to now.
        """
        expected = (place.entry.size, place.entry.mtime_ns)
        fd = self._open(place)
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns) != expected:  # perhaps an old file, replaced by a rename since
            self._close(place.key)
            fd = self._open(place)
            st = os.fstat(fd)
            if (st.st_size, st.st_mtime_ns) != expected:
                raise SyncError(f"{place.entry.path} {errors.SOURCE_CHANGED}: {errors.EDITED}")
        verified = self._verified.setdefault(place.key, set())
        block_hash = place.entry.block_hash(place.index)
        if block_hash not in verified:
            block = os.pread(fd, place.length, place.offset)
            if len(block) != place.length:
                raise SyncError(f"{place.entry.path} is shorter than published")
            if hash_block(block) != block_hash:
                self._close(place.key)
                raise SyncError(f"{place.entry.path} no longer holds what was published, "
                                f"{errors.SOURCE_CHANGED} (block {place.index} differs): {errors.EDITED}")
            verified.add(block_hash)
            return block if offset == 0 and length == len(block) else block[offset:offset + length]
        data = os.pread(fd, length, place.offset + offset)
        if len(data) != length:
            raise SyncError(f"{place.entry.path} is shorter than published")
        return data

    def _open(self, place: Place) -> int:
        fd = self._fds.get(place.key)
        if fd is not None:
            self._fds.move_to_end(place.key)
            return fd
        try:
            # links inside the tree resolve to their targets; then the open itself meets no symlink at all
            real = place.resolver.path(place.entry.path, checked=True)
            rel = os.path.relpath(real, place.resolver.root)
            fd = open_beneath(place.root.fd, rel, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise SyncError(f"{place.entry.path}: cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SyncError(f"{place.entry.path}: is no longer a regular file")
        self._fds[place.key] = fd
        if len(self._fds) > 64:
            self._close(next(iter(self._fds)))
        return fd

    def _close(self, key: str) -> None:
        os.close(self._fds.pop(key))
        self._verified.pop(key, None)

    # -- uploads --------------------------------------------------------------------

    def _upload(self, token: str) -> Upload:
        with self._lock:
            upload = self._uploads.get(token)
        if upload is None:
            raise SyncError(f"no upload is expected under token {token[:64]!r}")
        return upload

    def _on_offer(self, request: wire.Request) -> list[Any]:
        upload = self._upload(request.body["token"])
        if len(request.payloads) != 1:
            raise ProtocolError("offer: expected the manifest as one payload frame")
        try:
            need = upload.offer(request.payloads[0])
        except SyncError as exc:  # an unsafe or oversized manifest fails the upload for good
            self._failed(upload, str(exc))
            raise
        return wire.reply_frames(request.rid, {"need": len(need) // 32}, [need])

    def _on_put(self, request: wire.Request) -> list[Any]:
        upload = self._upload(request.body["token"])
        items = wire.put_items(request.body["items"], request.payloads, self.limits)
        try:
            bad = upload.put(items)
        except SyncError as exc:
            self._failed(upload, str(exc))
            raise
        return wire.reply_frames(request.rid, {"bad": bad})

    def _on_commit(self, request: wire.Request) -> list[Any]:
        upload = self._upload(request.body["token"])
        missing = upload.missing()
        if missing != 0:
            what = "nothing was offered" if missing is None else f"{missing} blocks were never received"
            raise SyncError(f"cannot commit an incomplete upload: {what}")
        try:
            upload.commit()
        except (OSError, SyncError) as exc:
            disk = isinstance(exc, DiskRefused)  # it names the folder and the OS error already
            error = str(exc) if disk else f"cannot place the files in {upload.dest}: {exc}"
            self._failed(upload, error)
            raise (DiskRefused if disk else SyncError)(error) from None
        with self._lock:
            self._uploads.pop(upload.token, None)
        self.counters.uploads_done += 1
        return wire.reply_frames(request.rid)

    def _on_abort(self, request: wire.Request) -> list[Any]:
        upload = self._upload(request.body["token"])
        self._failed(upload, f"sender gave up: {request.body['error'][:1000]}")
        return wire.reply_frames(request.rid)

    def _failed(self, upload: Upload, error: str) -> UploadResult:
        with self._lock:
            self._uploads.pop(upload.token, None)
        self.counters.uploads_failed += 1
        return upload.fail(error)


def _code(exc: BaseException) -> str:
    if isinstance(exc, DiskRefused):
        return wire.DISK
    if isinstance(exc, VerifyError):
        return wire.VERIFY
    if isinstance(exc, UnsafePath):
        return wire.UNSAFE
    if isinstance(exc, ManifestError):
        return wire.BAD_MANIFEST
    return wire.REFUSED


class _IndexSource:
    """The server's current published trees as a block source (read at lookup time)."""

    def __init__(self, server: FileServer) -> None:
        self._server = server

    def find_blocks(self, hashes: Sequence[bytes]) -> dict[bytes, list[tuple[str, int, int]]]:
        return self._server._index.find_blocks(hashes)
