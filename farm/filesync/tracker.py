"""The controller's file service as a tracker: who holds a tree, and who fetches which block from it.

`SwarmFileServer` is the controller's `FileServer` with two more operations for agents:

- ``peers``: register the caller's block server for a tree (``serve``: its endpoint; its key is the
  one it authenticated with; ``agent``: its agent id) and list up to `LISTED` others, with their
  keys; with keys, also the farm members a block server admits (sent only when they changed since
  the caller's ``members``). A registration from the same agent (key and id) replaces the one
  before (a restarted agent's dead predecessor), and nobody is offered itself. ``dead``: block
  servers that did not answer the caller; each is set aside for everyone for `ASIDE_S`, until it
  registers again.
- ``claim``: ask for the right to fetch blocks from the controller. A block is granted to one
  agent at a time (until `CLAIM_S` passes, when the claimant may be dead or slow); the others
  wait for it to appear at a peer. ``force`` is granted always: the fallback when no peer
  delivers. So the controller sends each block about once, whatever the number of agents. A
  claim without ``serve`` (an agent whose block server could not start) is granted as ``force``
  and not recorded: nobody could fetch those blocks from it.

A registration of an endpoint that another key holds (unexpired) is ignored: a member cannot
point fetchers at another member's block server under its own key.

State is bounded: at most `MAX_PEERS` registrations per tree, for published trees only, claims
only on blocks of published trees; registrations end after `TTL_S` without a refresh, and are
offered to nobody from the moment the controller drops the agent behind them
(`Tracker.forget_agent`: it said BYE, went silent, lost its connection or had its key revoked)
until it registers them again, or the controller sees the same process back (`restore_agent`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from farm.errors import ProtocolError
from farm.filesync import wire
from farm.filesync.errors import SyncError
from farm.filesync.hashing import HASH_LEN
from farm.filesync.server import FileServer

log = logging.getLogger(__name__)

TTL_S = 600.0  # a registration lasts this long after the agent last synced the tree
CLAIM_S = 30.0  # a claim this old may be granted to another agent (its claimant died or crawls)
MAX_PEERS = 4096  # registrations per tree
LISTED = 32  # peers named in one answer (a random sample: load spreads over the swarm)
MAX_ENDPOINT = 256
MAX_AGENT = 128  # characters of an agent id
MAX_DEAD = 16  # dead peers one ``peers`` request may report
ASIDE_S = 30.0  # a block server reported dead is left out of listings this long (or until it registers)

Members = Callable[[], list[str]]  # the Z85 public keys a block server should admit


class Tracker:
    """Registrations and claims per tree; thread-safe (the file server's thread is its only user)."""

    def __init__(self, *, ttl: float = TTL_S, claim_s: float = CLAIM_S, aside_s: float = ASIDE_S) -> None:
        self.ttl = ttl
        self.claim_s = claim_s
        self.aside_s = aside_s
        self._lock = threading.Lock()
        self._peers: dict[str, dict[str, _Entry]] = {}  # tree -> endpoint -> registration
        self._claims: dict[str, dict[bytes, tuple[str, float]]] = {}  # tree -> block -> (claimant, when)
        self.refused = 0  # registrations of an endpoint another key holds

    def register(self, tree: str, endpoint: str, key: str, agent: str | None = None) -> None:
        """Record ``endpoint`` as serving ``tree``; replaces what the same agent registered before."""
        now = time.monotonic()
        who = _identity(endpoint, key, agent)
        with self._lock:
            peers = self._peers.setdefault(tree, {})
            self._expire(peers, now)
            held = peers.get(endpoint)
            if held is not None and held.key != key and held.aside_until != math.inf:
                # another member's live block server: never repointed (a departed one's address may be reused)
                self.refused += 1
                if self.refused <= 10 or self.refused % 1000 == 0:
                    log.warning("ignored a registration of %s, which another key serves (%d ignored so far)",
                                endpoint[:100], self.refused)
                return
            for old in [e for e, entry in peers.items() if entry.who == who and e != endpoint]:
                log.info("block server %s of %s replaces %s", endpoint[:100], who[1] or "an agent", old[:100])
                del peers[old]  # its predecessor, dead or moved: never offered again
            if endpoint not in peers and len(peers) >= MAX_PEERS:  # room: drop those of departed agents
                for old in [e for e, entry in peers.items() if entry.aside_until == math.inf]:
                    del peers[old]
            if endpoint in peers or len(peers) < MAX_PEERS:
                peers[endpoint] = _Entry(key, now, who)

    def set_aside(self, tree: str, endpoints: list[str]) -> None:
        """Leave these block servers (reported dead) out of listings for `aside_s`, or until they register."""
        until = time.monotonic() + self.aside_s
        with self._lock:
            peers = self._peers.get(tree, {})
            for endpoint in endpoints[:MAX_DEAD]:
                if endpoint in peers:  # one whose agent is gone stays aside (forget_agent)
                    peers[endpoint].aside_until = max(peers[endpoint].aside_until, until)

    def listing(self, tree: str, exclude: str | None, key: str = "",
                agent: str | None = None) -> list[list[str]]:
        """Up to `LISTED` [endpoint, key] pairs serving ``tree``: never the caller itself (its endpoint
        ``exclude``, or its key and agent id), nor those set aside."""
        now = time.monotonic()
        who = _identity(exclude or "", key, agent)
        with self._lock:
            peers = self._peers.get(tree, {})
            self._expire(peers, now)
            found = [[endpoint, entry.key] for endpoint, entry in peers.items()
                     if endpoint != exclude and entry.who != who and now >= entry.aside_until]
        return random.sample(found, LISTED) if len(found) > LISTED else found

    def claim(self, tree: str, claimant: str, hashes: list[bytes], force: bool) -> list[bytes]:
        now = time.monotonic()
        granted = []
        with self._lock:
            claims = self._claims.setdefault(tree, {})
            for block_hash in hashes:
                held = claims.get(block_hash)
                if force or held is None or held[0] == claimant or now - held[1] > self.claim_s:
                    claims[block_hash] = (claimant, now)
                    granted.append(block_hash)
        return granted

    def forget_agent(self, key: str, agent: str) -> int:
        """Offer the agent with this key ("" without keys) and id to nobody, in every tree, and
        free the block claims its block servers held: the controller dropped it (it left, or went
        silent), so each offer would cost a failed fetch and a retry. Its registrations are kept
        aside until it registers again or `restore_agent` (the same process came back), or `ttl`
        ends them. Returns how many registrations that was."""
        who = _identity("", key, agent)
        with self._lock:
            gone: list[str] = []
            for peers in self._peers.values():
                for endpoint, entry in peers.items():
                    if entry.who == who:
                        entry.aside_until = math.inf
                        gone.append(endpoint)
            claimants = {f"{key} {endpoint}" for endpoint in gone}
            for claims in self._claims.values() if claimants else ():
                for block_hash in [h for h, (claimant, _) in claims.items() if claimant in claimants]:
                    del claims[block_hash]  # another agent may fetch it now, not after `claim_s`
        if gone:
            log.info("agent %s is gone: its %d block server registrations are offered to nobody",
                     agent[:MAX_AGENT], len(gone))
        return len(gone)

    def restore_agent(self, key: str, agent: str) -> int:
        """Offer again what `forget_agent` set aside for this agent: the controller knows it is the same
        process back (its block servers still serve). Returns how many registrations that was."""
        who = _identity("", key, agent)
        with self._lock:
            back = [entry for peers in self._peers.values() for entry in peers.values()
                    if entry.who == who and entry.aside_until == math.inf]
            for entry in back:
                entry.aside_until = 0.0
        return len(back)

    def forget(self, tree: str) -> None:
        with self._lock:
            self._peers.pop(tree, None)
            self._claims.pop(tree, None)

    def _expire(self, peers: dict[str, _Entry], now: float) -> None:
        for endpoint in [e for e, entry in peers.items() if now - entry.when > self.ttl]:
            del peers[endpoint]


@dataclass
class _Entry:
    key: str  # the Z85 key it authenticated with ("" without keys)
    when: float  # last registered (monotonic)
    who: tuple[str, str]  # the agent behind it (`_identity`)
    aside_until: float = 0.0  # reported dead: not listed before this (monotonic); inf: its agent is gone


def _identity(endpoint: str, key: str, agent: str | None) -> tuple[str, str]:
    """Who registers: its key and agent id; an agent that names no id is known by its endpoint."""
    return (key, agent) if agent else (key, "@" + endpoint)


class SwarmFileServer(FileServer):
    """A `FileServer` that also tracks peers (``peers``, ``claim``); ``members`` lists the keys a
    block server admits (None without keys)."""

    SERVES = FileServer.SERVES | {wire.PEERS, wire.CLAIM}

    def __init__(self, *args: Any, members: Members | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker = Tracker()
        self.members = members
        self._members_cache: tuple[float, str, list[str]] = (0.0, "", [])

    def unpublish(self, tree: str) -> None:
        super().unpublish(tree)
        self.tracker.forget(tree)

    def _members(self) -> tuple[str, list[str]]:
        if self.members is None:
            return "", []
        when, members_id, keys = self._members_cache
        if time.monotonic() - when > 1.0:  # re-read at most once a second (it reads allowed/)
            keys = sorted(self.members())
            members_id = hashlib.blake2b("\n".join(keys).encode(), digest_size=16).hexdigest()
            self._members_cache = (time.monotonic(), members_id, keys)
        return members_id, keys

    def _tree(self, request: wire.Request) -> str:
        tree = request.body["tree"]
        if tree not in self._index.trees:
            raise SyncError(f"no tree named {tree[:200]!r} is published")
        return str(tree)

    def _serve_endpoint(self, request: wire.Request) -> str | None:
        serve = request.body.get("serve")
        if serve is not None and not (0 < len(serve) <= MAX_ENDPOINT and serve.startswith("tcp://")):
            raise ProtocolError("peers: serve must be a tcp:// endpoint of at most 256 characters")
        return serve

    def _on_peers(self, request: wire.Request) -> list[Any]:
        tree = self._tree(request)
        serve = self._serve_endpoint(request)
        agent = request.body.get("agent")
        if agent is not None and not 0 < len(agent) <= MAX_AGENT:
            raise ProtocolError(f"peers: agent must be an id of 1 to {MAX_AGENT} characters")
        dead = request.body.get("dead") or []
        if len(dead) > MAX_DEAD:
            raise ProtocolError(f"peers: at most {MAX_DEAD} dead peers in one request")
        self.tracker.set_aside(tree, [e for e in dead if e != serve])
        if serve is not None:
            self.tracker.register(tree, serve, request.user or "", agent)
        members_id, keys = self._members()
        listed = self.tracker.listing(tree, serve, request.user or "", agent)
        fields = {"peers": listed, "members_id": members_id}
        known = request.body.get("members") == members_id
        return wire.reply_frames(request.rid, fields, [] if known else ["\n".join(keys).encode()])

    def _on_claim(self, request: wire.Request) -> list[Any]:
        tree = self._tree(request)
        if len(request.payloads) != 1 or len(wire.view(request.payloads[0])) % HASH_LEN:
            raise ProtocolError("claim: expected the block hashes as one payload frame")
        raw = bytes(wire.view(request.payloads[0]))
        if len(raw) // HASH_LEN > self.limits.max_items * 16:
            raise ProtocolError("claim: too many blocks in one request")
        blocks = self._index.blocks
        hashes = [h for i in range(0, len(raw), HASH_LEN) if (h := raw[i:i + HASH_LEN]) in blocks]
        serve = self._serve_endpoint(request)
        if serve is None:  # it serves nobody, so nobody may wait for it: granted, as with force, not recorded
            return wire.reply_frames(request.rid, None, [b"".join(hashes)])
        granted = self.tracker.claim(tree, f"{request.user or ''} {serve}", hashes, request.body["force"])
        return wire.reply_frames(request.rid, None, [b"".join(granted)])
