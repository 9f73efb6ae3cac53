"""`SwarmClient`: a `FileClient` that fetches a tree's blocks from other agents where it can.

The controller's manifest says what the tree is; the controller's tracker (`farm.filesync.tracker`)
says which agents serve it (endpoint and key) and grants each block to one agent at a time to
fetch from the controller (``claim``). The loop here keeps every source busy up to its credit:

- a peer is asked for blocks its ``have`` bitmap (polled every `HAVE_EVERY_S` until it is full)
  lists, in this agent's own random order, so agents pull different blocks at the same time;
- blocks no reachable peer has are claimed and fetched from the controller; a block claimed by
  another agent is waited for, until `FORCE_S` without a peer holding it while nothing else arrives
  (a claimant that died or crawls), when it is fetched from the controller anyway (``force``).

Every block goes through the same `Assembly` as a plain fetch: hashed against the manifest before
it counts. A peer that sends bad bytes, or never answers its first ``have`` in ``peer_timeout``
(a hung node, a firewall dropping packets), is dropped for the rest of the fetch; one that
refuses, stops answering for ``peer_timeout`` or vanishes is dropped for ``penalty_s`` (one
merely busy is asked again after `BUSY_S`); blocks it no longer holds (``missing`` in its reply:
evicted) are struck from its bitmap alone. Its blocks are asked for elsewhere. One whose
connection is refused (`PeerWatch`) is dropped at once, not after ``peer_timeout``; those that
did not answer are reported to the tracker (``dead``), which sets them aside for every agent. At
most `LIVE_PEERS` peers are connected at once. The controller stays the source of last resort,
with the plain client's timeouts and retries.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import zmq

from farm.filesync import wire
from farm.filesync.assembly import Assembly, Outcome
from farm.filesync.client import MAX_IN_FLIGHT, ClientCounters, FileClient, Progress, ProgressFn, _Request
from farm.filesync.errors import SyncError, TransferError, VerifyError
from farm.filesync.hashing import HASH_LEN
from farm.filesync.holdings import Holding, Holdings
from farm.filesync.manifest import Manifest
from farm.filesync.materialize import Sources
from farm.filesync.peerset import BadPeer, Peer, PeerSet
from farm.filesync.tracker import MAX_DEAD

log = logging.getLogger(__name__)

SocketSetup = Callable[[zmq.Socket], None]
PeerSetup = Callable[[str], SocketSetup | None]  # a peer's Z85 key -> how to connect to it
HAVE_EVERY_S = 0.25
PEERS_EVERY_S = 1.0
FORCE_S = 5.0  # a block claimed elsewhere, offered by no peer this long, nothing else arriving: force
RECLAIM_S = 0.5  # a denied block is asked for again after this long
PENALTY_S = 10.0
TRACKER_WAIT_S = 10.0  # no answer to the first ``peers`` this long: the controller alone, as before
BUSY_S = 1.0  # a peer serving all the fetchers it may is asked again this soon
PEER_WINDOW = 8 << 20  # bytes asked of one peer at once
DRAIN = 64  # replies read from one socket per turn
PEER_REQUESTS = 8  # requests in flight at one peer (a block server queues 16 per fetcher)


class SwarmClient(FileClient):
    """`FileClient` whose `sync` also fetches from peers and serves what it holds (`holdings`).

    ``serve``: this agent's block server endpoint, registered with the tracker (None: fetch
    from peers, serve none); ``peer_setup(key)``: CURVE set-up for a peer with that key;
    ``on_members(id, keys)``: the farm members the controller vouches for, for the block server;
    ``agent``: this agent's id (the tracker replaces its earlier registrations and never lists it);
    ``peer_timeout``, ``penalty_s``: seconds a peer may take to answer, and a failed one is left alone;
    ``on_served(tree, manifest_id)``: called when a sync registered this agent as serving ``tree``.
    """

    def __init__(self, endpoint: str, store: Any, *, holdings: Holdings, serve: str | None = None,
                 peer_setup: PeerSetup | None = None,
                 on_members: Callable[[str, list[str]], None] | None = None,
                 members_id: Callable[[], str] | None = None, peer_timeout: float = 5.0,
                 penalty_s: float = PENALTY_S, agent: str | None = None,
                 on_served: Callable[[str, str], None] | None = None, **options: Any) -> None:
        super().__init__(endpoint, store, **options)
        self.holdings = holdings
        self.serve = serve
        self.peer_setup = peer_setup or (lambda key: None)
        self.on_members = on_members
        self.members_id = members_id or (lambda: "")
        self.peer_timeout = peer_timeout
        self.penalty_s = penalty_s
        self.on_served = on_served
        self.agent = agent  # this agent's id, so the tracker knows a restarted agent's old registration
        self.peer_counters = ClientCounters()  # blocks and bytes from peers (``counters``: the controller's)
        self._tree: str | None = None
        self._dead: set[str] = set()  # peers a fetch found dead and had no turn to report
        self._manifest: Manifest | None = None
        self._holding: Holding | None = None  # what this fetch offers while it runs

    def sync(self, tree: str, dest: Any, *, progress: ProgressFn | None = None,
             **materialize: bool) -> Manifest:
        self._tree = tree
        try:
            return super().sync(tree, dest, progress=progress, **materialize)
        finally:
            self._tree = None

    def _fetch(self, manifest: Manifest, progress: ProgressFn | None) -> Sources | None:
        self._manifest, self._holding = manifest, None
        try:
            have = super()._fetch(manifest, progress)
        except BaseException:
            if self._holding is not None:  # its partial files may be adopted by another fetch
                self.holdings.forget(self._holding)
            raise
        store = self._need_store()
        if self._holding is not None:  # its partial files are in the cache now
            self.holdings.forget(self._holding)
        self.holdings.begin(manifest, store.file_path, None)  # all here: served from the cache
        if self._tree is not None and self.serve is not None and self.on_served is not None:
            self.on_served(self._tree, manifest.id)  # to keep its registration alive while it serves
        dead, self._dead = sorted(self._dead)[:MAX_DEAD], set()
        # held already, say so; or tell the tracker who did not answer, before the next fetcher asks
        if self._tree is not None and self.serve is not None and (have is not None or dead):
            timeout, self.timeout = self.timeout, min(self.timeout, TRACKER_WAIT_S)
            try:
                body, payloads = self._call(wire.PEERS, self.peers_fields(self._tree, dead))
            except TransferError as exc:  # a file service that tracks no peers: nothing to offer to
                log.info("cannot offer %s to other agents: %s", self._tree, exc)
                return have
            finally:
                self.timeout = timeout
            if payloads and self.on_members is not None:
                keys = bytes(wire.view(payloads[0])).decode("ascii", "replace").split()
                self.on_members(body["members_id"], keys)
        return have

    def peers_fields(self, tree: str, dead: list[str] | None = None) -> dict[str, Any]:
        """The body of a ``peers`` request for ``tree``, reporting ``dead`` block servers."""
        fields = {"tree": tree, "serve": self.serve, "members": self.members_id(), "dead": dead or []}
        return {**fields, "agent": self.agent} if self.agent else fields

    def _fetch_blocks(self, assembly: Assembly, progress: ProgressFn | None) -> None:
        if self._tree is None or self._manifest is None:
            super()._fetch_blocks(assembly, progress)
            return
        store = self._need_store()
        self._holding = self.holdings.begin(self._manifest, store.file_path, store.session_dir(),
                                            missing=[h for h, _ in assembly.missing()])
        try:
            _Swarm(self, self._tree, self._holding, assembly, progress).run()
        except NoTracker as exc:  # fetch the rest from the controller alone, as before peers
            log.info("fetching %s from the file service alone: %s", self._tree, exc)
            super()._fetch_blocks(assembly, progress)


class _Swarm:
    """One fetch's loop over the controller and its peers."""

    def __init__(self, client: SwarmClient, tree: str, holding: Holding, assembly: Assembly,
                 progress: ProgressFn | None) -> None:
        self.c = client
        self.tree = tree
        self.holding = holding
        self.manifest_id = holding.manifest_id
        self.index = {h: i for i, h in enumerate(holding.order)}
        self.count = len(holding.order)
        self.assembly = assembly
        self.progress = progress
        self.lengths = dict(assembly.missing())
        self.total = len(self.lengths)
        self.todo = list(self.lengths)
        random.shuffle(self.todo)  # agents pull different blocks first
        self.busy: dict[bytes, str] = {}  # block -> the source asked for it ("" = the controller)
        self.granted: deque[bytes] = deque()
        self.denied: dict[bytes, float] = {}  # block -> when first denied
        self.asked_at: dict[bytes, float] = {}  # block -> when last denied
        self.peers = PeerSet(self._open, client.peer_timeout, client.penalty_s)
        self.ctl: dict[int, tuple[str, Any]] = {}  # rid -> (op, request or hashes)
        self.ctl_bytes = 0
        self.bad: Counter[bytes] = Counter()
        self.done_bytes = 0
        self.last_peers = 0.0
        self.heard_peers = False
        self.last_heard = self.started = time.monotonic()

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            while self.lengths:
                now = time.monotonic()
                self._ask(now)
                poller = zmq.Poller()
                poller.register(self.c._sock, zmq.POLLIN)
                for peer in self.peers.live.values():
                    if peer.inflight or peer.have_rid is not None:
                        poller.register(peer.client._sock, zmq.POLLIN)
                events = dict(poller.poll(50))
                if self.c._sock in events:
                    self._drain_controller()
                for peer in list(self.peers.live.values()):
                    if peer.client._sock in events:
                        self._drain_peer(peer)
                now = time.monotonic()
                if not self.heard_peers and now - self.started > TRACKER_WAIT_S:
                    raise NoTracker(f"no answer to peers in {TRACKER_WAIT_S:g} s")
                for peer in self.peers.expire(now):
                    self._unbusy(peer)
                if now - self.last_heard > self.c.timeout:
                    raise TransferError(f"no block arrived from the file server at {self.c.endpoint} "
                                        f"or its peers in {self.c.timeout:g} s")
        finally:
            self.c._dead |= self.peers.dead
            self.peers.close()

    def _ask(self, now: float) -> None:
        if now - self.last_peers > PEERS_EVERY_S and not any(op == wire.PEERS for op, _ in self.ctl.values()):
            self.last_peers = now
            fields = self.c.peers_fields(self.tree, sorted(self.peers.dead)[:MAX_DEAD])
            self.peers.dead.difference_update(fields["dead"])
            self.ctl[self.c._send(wire.PEERS, fields, [])] = (wire.PEERS, None)
        for peer in self.peers.live.values():
            polled = peer.full or now - peer.have_at <= HAVE_EVERY_S  # full stays full (evictions: `missing`)
            if peer.usable(now) and peer.have_rid is None and not polled:
                peer.have_rid = peer.client._send(wire.HAVE, {"manifest": self.manifest_id}, [])
                peer.have_sent = now
            if peer.usable(now) and peer.have and peer.outstanding < PEER_WINDOW:
                self._fill_peer(peer)
        self._fill_controller(now)

    def _fill_peer(self, peer: Peer) -> None:
        picked, room = [], PEER_WINDOW - peer.outstanding
        for block_hash in self.todo:
            if room <= 0:
                break
            if block_hash in self.lengths and block_hash not in self.busy \
                    and self.index[block_hash] in peer.have:
                picked.append((block_hash, 0, self.lengths[block_hash]))
                room -= self.lengths[block_hash]
                self.busy[block_hash] = peer.endpoint
        for request in self._whole(picked, PEER_REQUESTS - len(peer.inflight), not peer.inflight):
            rid = peer.client._send(wire.GET, {"items": [list(i) for i in request.items]}, [])
            peer.inflight[rid] = (request, time.monotonic())
            peer.outstanding += request.cost

    def _whole(self, picked: list[tuple[bytes, int, int]], slots: int, idle: bool) -> list[_Request]:
        """The requests for ``picked`` that fit in ``slots``, whole blocks only (a large block's
        chunks go together; one that needs more than all the slots goes alone to an ``idle``
        source); blocks left out are no longer busy, to be asked for again."""
        requests, taken = list(self.c._chunked(picked)), 0
        while taken < len(requests):
            first = requests[taken].items[0]
            end = taken + 1
            split = first[2] < self.lengths[first[0]]  # a large block's first chunk: the next ones follow
            while split and end < len(requests) and requests[end].items[0][0] == first[0]:
                end += 1
            if end - taken > slots and not (idle and taken == 0):
                break
            slots -= end - taken
            taken = end
        for request in requests[taken:]:
            for block_hash, _, _ in request.items:
                self.busy.pop(block_hash, None)
        return requests[:taken]

    def _fill_controller(self, now: float) -> None:
        picked, room = [], self.c.window - self.ctl_bytes
        while self.granted and room > 0:
            block_hash = self.granted.popleft()
            if block_hash in self.lengths and block_hash not in self.busy:
                picked.append((block_hash, 0, self.lengths[block_hash]))
                room -= self.lengths[block_hash]
                self.busy[block_hash] = ""
        gets = sum(op == wire.GET for op, _ in self.ctl.values())
        requests = self._whole(picked, MAX_IN_FLIGHT - gets, gets == 0)
        sent = {h for request in requests for h, _, _ in request.items}
        self.granted.extendleft(reversed([h for h, _, _ in picked if h not in sent]))
        for request in requests:
            rid = self.c._send(wire.GET, {"items": [list(i) for i in request.items]}, [])
            self.ctl[rid] = (wire.GET, request)
            self.ctl_bytes += request.cost
        if self.granted or any(op == wire.CLAIM for op, _ in self.ctl.values()):
            return
        if not self.heard_peers or self.peers.waiting(now):
            return  # first learn what new peers hold (one silent for the peer timeout is dropped)
        held = self.peers.held(now, self.count)
        # force only when nothing else is coming: a busy fetcher waits, the claimant is likely just slow
        idle = not any(op == wire.GET for op, _ in self.ctl.values()) and not any(
            p.inflight for p in self.peers.live.values())
        claim, force, size = [], [], 0
        for block_hash in self.todo:
            if size >= self.c.window:
                break
            if block_hash not in self.lengths or block_hash in self.busy or self.index[block_hash] in held:
                continue
            if now - self.asked_at.get(block_hash, 0.0) < RECLAIM_S:
                continue
            forced = idle and now - self.denied.get(block_hash, now) > FORCE_S
            (force if forced else claim).append(block_hash)
            size += self.lengths[block_hash]
        for hashes, forced in ((claim, False), (force, True)):
            if hashes:
                fields = {"tree": self.tree, "serve": self.c.serve, "force": forced}
                rid = self.c._send(wire.CLAIM, fields, [b"".join(hashes)])
                self.ctl[rid] = (wire.CLAIM, hashes)
                for block_hash in hashes:
                    self.asked_at[block_hash] = now

    # -- replies ----------------------------------------------------------------------

    @staticmethod
    def _recv(client: FileClient, counters: ClientCounters) -> tuple[int | None, list[wire.Frame]] | None:
        """The next reply waiting on ``client``'s socket and its rid, or None if none is waiting."""
        try:
            frames = client._sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        counters.bytes_received += sum(wire.frame_len(f) for f in frames)
        return wire.reply_rid(frames), frames

    def _drain_controller(self) -> None:
        for _ in range(DRAIN):
            if (got := self._recv(self.c, self.c.counters)) is None:
                return
            rid, frames = got
            if rid not in self.ctl:
                continue
            op, what = self.ctl.pop(rid)
            try:
                body, payloads = self.c._parse(frames, op)  # a refusal: an error, as without peers
            except SyncError as exc:
                if op in (wire.PEERS, wire.CLAIM):  # a file service that tracks no peers (another version)
                    raise NoTracker(str(exc)) from None
                raise
            self.last_heard = time.monotonic()
            if op == wire.PEERS:
                self._on_peers(body, payloads)
            elif op == wire.CLAIM:
                self._on_claim(what, payloads)
            else:
                self.ctl_bytes -= what.cost
                self._release(what)
                self._on_blocks(what, payloads, "", self.c.counters)

    def _on_peers(self, body: dict[str, Any], payloads: list[wire.Frame]) -> None:
        self.heard_peers = True
        if payloads and self.c.on_members is not None:
            keys = bytes(wire.view(payloads[0])).decode("ascii", "replace").split()
            self.c.on_members(body["members_id"], keys)
        self.peers.add(body["peers"], self.c.serve, time.monotonic())

    def _open(self, endpoint: str, key: str) -> FileClient:
        return FileClient(endpoint, None, context=self.c.context, socket_setup=self.c.peer_setup(key),
                          chunk_size=self.c.chunk_size)

    def _on_claim(self, asked: list[bytes], payloads: list[wire.Frame]) -> None:
        raw = bytes(wire.view(payloads[0])) if len(payloads) == 1 else b""
        granted = {raw[i:i + HASH_LEN] for i in range(0, len(raw), HASH_LEN)}
        now = time.monotonic()
        for block_hash in asked:
            if block_hash in granted:
                self.granted.append(block_hash)
                self.denied.pop(block_hash, None)
            else:
                self.denied.setdefault(block_hash, now)

    def _drain_peer(self, peer: Peer) -> None:
        for _ in range(DRAIN):  # bounded: a peer flooding replies cannot hold the loop
            if (got := self._recv(peer.client, self.c.peer_counters)) is None:
                return
            rid, frames = got
            try:
                if rid is not None and rid == peer.have_rid:
                    peer.have_rid = None
                    body, payloads = peer.client._parse(frames, wire.HAVE)
                    peer.take_have(time.monotonic(), body, payloads, self.count)
                elif rid in peer.inflight:
                    request, _ = peer.inflight.pop(rid)
                    peer.outstanding -= request.cost
                    self._release(request)
                    body, payloads = peer.client._parse(frames, wire.GET)
                    missing = peer.strike(request, body.get("missing") or [], self.index)
                    self._on_blocks(request, payloads, peer.endpoint, self.c.peer_counters, missing)
            except BadPeer as exc:
                log.warning("peer %s sent bad data (%s); fetching its blocks elsewhere", peer.endpoint, exc)
                self.peers.drop(peer, math.inf)
                self._unbusy(peer)
                return
            except SyncError as exc:  # refused: busy, a key it does not admit, an older peer's refusal
                if "busy:" in str(exc):
                    log.debug("peer %s: %s; fetching elsewhere for now", peer.endpoint, exc)
                    self._unbusy(peer)
                    self.peers.reset(peer, BUSY_S, time.monotonic())
                else:
                    log.info("peer %s: %s; fetching elsewhere for now", peer.endpoint, exc)
                    self.peers.drop(peer, time.monotonic() + self.c.penalty_s)
                    self._unbusy(peer)
                return

    def _on_blocks(self, request: _Request, payloads: list[wire.Frame], source: str,
                   counters: ClientCounters, missing: set[int] | frozenset[int] = frozenset()) -> None:
        if len(payloads) != len(request.items):
            if source:
                raise BadPeer(f"asked for {len(request.items)} chunks, got {len(payloads)}")
            raise TransferError(f"asked for {len(request.items)} chunks, got {len(payloads)}")
        for i, ((block_hash, offset, length), frame) in enumerate(zip(request.items, payloads, strict=True)):
            if i in missing:
                continue  # not held there any more: asked for elsewhere
            data = wire.view(frame)
            if len(data) != length:
                if source:
                    raise BadPeer(f"asked for {length} bytes, got {len(data)}")
                raise TransferError(f"asked for {length} bytes, got {len(data)}")
            outcome = self.assembly.accept(block_hash, offset, data)
            if outcome is Outcome.DONE:
                counters.blocks_fetched += 1
                self.done_bytes += self.lengths.pop(block_hash)
                self.c.holdings.add(self.holding, block_hash)
                self.last_heard = time.monotonic()
            elif outcome is Outcome.BAD:
                counters.blocks_rejected += 1
                if source:
                    raise BadPeer(f"block {block_hash.hex()[:16]} failed verification")
                if offset + length == self.lengths[block_hash]:
                    self.bad[block_hash] += 1
                    if self.bad[block_hash] > self.c.retries:
                        raise VerifyError(f"block {block_hash.hex()[:16]} failed verification "
                                          f"{self.bad[block_hash]} times")
                    self.granted.appendleft(block_hash)
        self.c._store_ready(self.assembly)
        if self.progress is not None:
            self.progress(Progress(self.total - len(self.lengths), self.total, self.done_bytes))

    # -- failures ---------------------------------------------------------------------

    def _release(self, request: _Request) -> None:
        for block_hash, offset, length in request.items:
            if offset + length >= self.lengths.get(block_hash, 0):
                self.busy.pop(block_hash, None)  # its last chunk came back: done, or to ask again

    def _unbusy(self, peer: Peer) -> None:
        """``peer``'s requests go back to be asked elsewhere."""
        for request, _ in peer.inflight.values():
            for block_hash, _, _ in request.items:
                if self.busy.get(block_hash) == peer.endpoint:
                    del self.busy[block_hash]


class NoTracker(SyncError):
    """The file service does not track peers (it refused or ignored ``peers``, ``claim``)."""
