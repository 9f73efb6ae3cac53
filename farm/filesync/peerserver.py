"""`PeerServer`: an agent serving the blocks it holds to other agents of its farm.

It is a `FileServer` (same socket loop, fair queue, bounds and wire format) that answers two
operations only: ``have`` (a bitmap of a tree's blocks held here) and ``get`` (blocks by hash,
looked up in a held manifest and read from the file the cache names by that file's digest,
hashed before the first byte is served; a block no file here yields any more is listed in the
reply's ``missing`` and no longer offered, the other items are served). Everything else is refused.

With keys, it is a CURVE server with this agent's own key pair, on a ZeroMQ context of its own
whose ZAP handler admits only the keys the controller vouches for (farm members with the agent
role, `members`), so a fetcher proves membership in the handshake and checks that this server
holds the key the controller named. At most ``max_fetchers`` clients are served at once; one
more asking for blocks is told ``busy`` and fetches elsewhere.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from typing import Any

import zmq

from farm.errors import ProtocolError
from farm.filesync import wire
from farm.filesync.errors import SyncError
from farm.filesync.hashing import hash_block
from farm.filesync.holdings import Holdings
from farm.filesync.server import FileServer
from farm.keys import KeyPair
from farm.security import ZAP_DOMAIN, _ZapHandler

log = logging.getLogger(__name__)

ACTIVE_S = 2.0  # a fetcher that asked for nothing this long no longer counts against max_fetchers


class Members:
    """The public keys (Z85) the controller vouches for; duck-types the allow list `_ZapHandler` asks."""

    def __init__(self) -> None:
        self.keys: frozenset[bytes] = frozenset()
        self.id = ""
        self.revoked: dict[bytes, str] = {}

    def update(self, members_id: str, keys: list[str]) -> None:
        self.keys, self.id = frozenset(k.encode() for k in keys), members_id

    def allows(self, key: bytes, *, max_age: float = 0.0) -> bool:
        return key in self.keys

    def token_for(self, key: bytes) -> None:
        return None


class PeerServer(FileServer):
    """Serves what `holdings` says this agent holds; ``keys`` (this agent's pair) turns CURVE on."""

    SERVES = frozenset({wire.HAVE, wire.GET})

    def __init__(self, bind: str, holdings: Holdings, *, keys: KeyPair | None = None,
                 max_fetchers: int = 4, active_s: float = ACTIVE_S) -> None:
        self.members = Members()
        self.keys = keys
        context = zmq.Context()
        self._zap = _ZapHandler(context, self.members) if keys is not None else None  # type: ignore[arg-type]
        super().__init__(bind, context=context, socket_setup=self._curve if keys is not None else None,
                         max_queue=16, access=self._admits)
        self.holdings = holdings
        self.max_fetchers = max_fetchers
        self.active_s = active_s  # a fetcher that asked for no block this long no longer counts
        self._active: OrderedDict[bytes, float] = OrderedDict()
        self._checked: OrderedDict[tuple[str, int, bytes], None] = OrderedDict()  # blocks hashed here

    def _curve(self, sock: zmq.Socket) -> None:
        assert self.keys is not None
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP answer: refuse, never admit

    def _admits(self, request: wire.Request) -> str | None:
        if self.keys is not None and (request.user or "").encode() not in self.members.keys:
            return "this key is not one the controller vouches for as a farm member"
        return None

    def start(self) -> PeerServer:
        try:
            super().start()
        except SyncError:
            self.close()
            raise
        return self

    def close(self) -> None:
        super().close()
        if self._zap is not None:
            self._zap.stop()
            self._zap = None
        self.context.term()

    def _serve(self, sock: zmq.Socket, client: bytes, request: wire.Request) -> None:
        if request.op != wire.GET:  # a have costs a bitmap: answered whoever asks
            super()._serve(sock, client, request)
            return
        now = time.monotonic()
        while self._active and now - next(iter(self._active.values())) > self.active_s:
            self._active.popitem(last=False)
        if client not in self._active and len(self._active) >= self.max_fetchers:
            self.counters.errors += 1
            error = f"busy: serving {self.max_fetchers} fetchers already"
            self._send(sock, client, wire.error_frames(request.rid, error, wire.BUSY))
            return
        self._active[client] = now
        self._active.move_to_end(client)
        super()._serve(sock, client, request)

    def _on_have(self, request: wire.Request) -> list[Any]:
        held = self.holdings.have(request.body["manifest"])
        if held is None:
            return wire.reply_frames(request.rid, {"count": 0}, [b""])
        count, bits = held
        return wire.reply_frames(request.rid, {"count": count}, [bits])

    def _on_get(self, request: wire.Request) -> list[Any]:
        items = wire.get_items(request.body["items"], self.limits)
        payloads: list[bytes] = []
        missing: list[int] = []
        for i, (block_hash, offset, length) in enumerate(items):
            data = self._read(block_hash, offset, length)
            if data is None:  # not held (any more): the fetcher asks elsewhere for these alone
                missing.append(i)
            payloads.append(data or b"")
        self.counters.blocks_served += len(items) - len(missing)
        return wire.reply_frames(request.rid, {"missing": missing} if missing else None, payloads)

    def _read(self, block_hash: bytes, offset: int, length: int) -> bytes | None:
        """The bytes asked for, or None if no file here holds the block (it is then no longer offered)."""
        where = self.holdings.where(block_hash)
        if where is None:
            return None
        if offset + length > where.length:
            raise ProtocolError(f"get: {offset}+{length} is past the end of a {where.length}-byte block")
        # the stored file again last: a partial file may have been renamed into the cache meanwhile
        for path in (*where.paths, where.paths[0]):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue  # a partial file renamed into the cache meanwhile, or an evicted one
            try:
                key = (path, os.fstat(fd).st_ino, block_hash)
                if key not in self._checked:  # the first read of a block through a file is hashed in full
                    block = os.pread(fd, where.length, where.offset)
                    if hash_block(block) != block_hash:
                        continue
                    self._checked[key] = None
                    if len(self._checked) > 65536:
                        self._checked.popitem(last=False)
                    return block[offset:offset + length]
                data = os.pread(fd, length, where.offset + offset)
                if len(data) == length:
                    return data
            finally:
                os.close(fd)
        log.info("block %s is no longer in this cache (evicted); no longer offering its file",
                 block_hash.hex()[:16])
        self.holdings.lose(block_hash)
        return None
