"""The peers one fetch talks to (`farm.filesync.swarm`): their sockets, bitmaps, and who is dropped.

At most `LIVE_PEERS` are connected at once (each costs a socket and a monitor socket; a tracker
lists up to `LISTED` per answer, a new sample every second). A dropped peer's slot goes to
another; it is not connected to again before its time (never, for one that sent bad bytes or
never answered at all).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zmq import ZMQError

from farm.filesync import wire
from farm.filesync.client import FileClient, _Request
from farm.filesync.errors import SyncError
from farm.filesync.holdings import Bits
from farm.filesync.peerwatch import PeerWatch
from farm.filesync.tracker import LISTED

log = logging.getLogger(__name__)

LIVE_PEERS = LISTED  # peers connected at once

Opener = Callable[[str, str], FileClient]  # (endpoint, key) -> a client of that peer's block server


class BadPeer(SyncError):
    """A peer broke the protocol or sent bytes that do not match the manifest."""


@dataclass
class Peer:
    endpoint: str
    key: str
    client: FileClient
    watch: PeerWatch
    added: float  # when it was connected (monotonic)
    have: Bits | None = None
    full: bool = False  # its bitmap lists every block: no need to ask again
    have_at: float = 0.0  # its last bitmap came (0: never)
    have_rid: int | None = None
    have_sent: float = 0.0
    inflight: dict[int, tuple[_Request, float]] = field(default_factory=dict)
    outstanding: int = 0
    penalty_until: float = 0.0

    def usable(self, now: float) -> bool:
        return now >= self.penalty_until

    def stalled(self, now: float, timeout: float) -> bool:
        late = self.have_rid is not None and now - self.have_sent > timeout
        return late or any(now - sent > timeout for _, sent in self.inflight.values())

    def take_have(self, now: float, body: dict[str, Any], payloads: list[wire.Frame], count: int) -> None:
        """Its ``have`` reply, for a tree of ``count`` blocks; raises `BadPeer` on a malformed one."""
        self.have_at = now
        if body["count"] == 0:
            self.have, self.full = None, False
            return
        if body["count"] != count or len(payloads) != 1:
            raise BadPeer(f"a have bitmap of {body['count']} blocks for a tree of {count}")
        try:
            self.have = Bits.parse(wire.view(payloads[0]), count)
        except ValueError as exc:
            raise BadPeer(str(exc)) from None
        self.full = self.have.is_full()

    def strike(self, request: _Request, missing: list[int], index: dict[bytes, int]) -> set[int]:
        """The items of ``request`` it no longer holds (evicted), struck from its bitmap alone."""
        if len(set(missing)) != len(missing) or not all(0 <= i < len(request.items) for i in missing):
            raise BadPeer(f"missing items {missing[:8]} of a request of {len(request.items)}")
        for i in missing:
            if self.have is not None:
                self.have.discard(index[request.items[i][0]])
                self.full = False
        return set(missing)

    def close(self) -> None:
        self.watch.close()
        self.client.close()


class PeerSet:
    """The live peers of one fetch and those dropped; ``dead``: the ones to report to the tracker."""

    def __init__(self, open_client: Opener, peer_timeout: float, penalty_s: float) -> None:
        self.open_client = open_client
        self.peer_timeout = peer_timeout
        self.penalty_s = penalty_s
        self.live: dict[str, Peer] = {}
        self.gone: dict[str, float] = {}  # endpoint -> not connected to again before (monotonic; inf: never)
        self.dead: set[str] = set()

    def add(self, listed: list[Any], exclude: str | None, now: float) -> None:
        """Connect to listed [endpoint, key] pairs while there is room."""
        for item in listed[:64]:
            if len(self.live) >= LIVE_PEERS:
                return
            if len(item) != 2 or item[0] in self.live or item[0] == exclude:
                continue
            if now < self.gone.get(item[0], 0.0):
                continue
            endpoint, key = item
            try:
                client = self.open_client(endpoint, key)
            except (ZMQError, ValueError, SyncError) as exc:
                log.info("cannot use peer %s: %s", endpoint[:100], exc)
                continue
            self.live[endpoint] = Peer(endpoint, key, client, PeerWatch(client._sock), now)

    def waiting(self, now: float) -> bool:
        """Whether a peer added less than the peer timeout ago has not said what it holds yet."""
        return any(p.usable(now) and p.have_at == 0.0 and now - p.added < self.peer_timeout
                   for p in self.live.values())

    def held(self, now: float, count: int) -> Bits:
        """The blocks the usable peers say they hold."""
        return Bits.union(count, [p.have for p in self.live.values() if p.usable(now) and p.have is not None])

    def reset(self, peer: Peer, penalty: float, now: float) -> None:
        """Forget what ``peer`` was asked and ask it nothing for ``penalty`` s; a fresh socket, so
        replies to what was abandoned are not taken for new ones."""
        peer.inflight.clear()
        peer.outstanding = 0
        peer.have_rid = None
        peer.have, peer.full = None, False
        peer.penalty_until = now + penalty
        peer.close()
        peer.client = self.open_client(peer.endpoint, peer.key)
        peer.watch = PeerWatch(peer.client._sock)

    def drop(self, peer: Peer, until: float) -> None:
        """Close ``peer``; connect to it again no sooner than ``until`` (monotonic; inf: never)."""
        peer.close()
        self.live.pop(peer.endpoint, None)
        self.gone[peer.endpoint] = until

    def expire(self, now: float) -> list[Peer]:
        """Drop the peers whose connection is refused or that did not answer in time; returns them."""
        dropped = []
        for peer in list(self.live.values()):
            if peer.usable(now) and peer.watch.refused():  # nobody listens there: no need to wait
                log.info("peer %s refused the connection; fetching elsewhere", peer.endpoint)
                until = now + self.penalty_s
            elif peer.stalled(now, self.peer_timeout):
                never = peer.have_at == 0.0  # it never answered at all: a hung node or a dropping firewall
                log.info("peer %s did not answer in %g s; fetching %s", peer.endpoint, self.peer_timeout,
                         "without it" if never else "elsewhere")
                until = math.inf if never else now + self.penalty_s
            else:
                continue
            self.dead.add(peer.endpoint)
            self.drop(peer, until)
            dropped.append(peer)
        return dropped

    def close(self) -> None:
        for peer in self.live.values():
            peer.close()
        self.live.clear()
