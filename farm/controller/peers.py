"""Per-peer budgets on the controller's socket, so one noisy peer cannot starve the others.

The loop reads at most `PER_TURN` messages per turn, then dispatches, checks leases and
sends updates; within a turn each client or stranger may have `PER_PEER` messages
handled. Past its budget a peer's message waits for the next turn (an honest client answered
at once may ask again within one turn), up to `DEFER_PER_PEER` of each peer's (`Deferred`);
beyond, it is dropped: a flood's excess is dropped, never a share of everyone's waiting room.
All peers together keep at most `MAX_DEFERRED` waiting (strangers may cycle identities); when
that is full, the peer with the most waiting loses its newest, so a peer that keeps to a fair
share of the room keeps its place.
A turn that dropped most of what it read makes the loop pause a millisecond before reading
on, so a flood costs the controller a bounded share of a core and the honest processes on
the machine keep theirs. A registered agent has no such budget (dropping its results would
lose finished work; ZeroMQ's fair queueing already gives every connection its turn), but
like anyone it is ignored for a while once it keeps sending malformed messages.
"""

from __future__ import annotations

import time
from typing import Any

PER_TURN = 64  # messages read per loop turn, all peers together
PER_PEER = 16  # messages handled per loop turn from one client or stranger
BAD_BEFORE_IGNORING = 20  # malformed messages before a peer is ignored
IGNORE_FOR_S = 10.0
DEFER_PER_PEER = 2 * PER_PEER  # messages past one peer's budget kept for the next turn (two turns' worth)
MAX_DEFERRED = 256  # messages past their sender's budget kept for the next turn, all peers together
FLOOD_PAUSE_MS = 1  # after a turn of mostly dropped messages, the loop waits this long before reading on
MAX_TRACKED = 4096  # peers remembered; strangers may cycle identities, so stay bounded


class PeerBudgets:
    """What each peer may still send this turn, and who is being ignored for sending garbage."""

    def __init__(self) -> None:
        self._used: dict[bytes, int] = {}
        self.bad: dict[bytes, int] = {}
        self._ignored: dict[bytes, float] = {}
        self.dropped = 0  # messages dropped unread (over budget, or from an ignored peer)
        self.admitted = 0  # messages from clients and strangers read within their budget
        self._dropped_at_turn = 0

    def new_turn(self) -> None:
        self._used.clear()
        self._dropped_at_turn = self.dropped

    def flooded(self) -> bool:
        """Whether most of the last turn's messages were dropped: someone is flooding."""
        return self.dropped - self._dropped_at_turn > PER_TURN // 2

    def ignoring(self, identity: bytes, now: float) -> bool:
        """Whether ``identity`` is being ignored for garbage now."""
        until = self._ignored.get(identity)
        return until is not None and now < until

    def admit(self, identity: bytes, is_agent: bool, now: float | None = None) -> bool:
        """Whether to read this message from ``identity``; counts it against the peer's budget."""
        if self._ignored:
            until = self._ignored.get(identity)
            if until is not None:
                if (now if now is not None else time.monotonic()) < until:
                    self.dropped += 1
                    return False
                del self._ignored[identity]
                self.bad.pop(identity, None)
        if is_agent:
            return True
        used = self._used.get(identity, 0) + 1
        self._used[identity] = used
        if used > PER_PEER:
            self.dropped += 1
            return False
        self.admitted += 1
        return True

    def strike(self, identity: bytes, now: float | None = None) -> int:
        """Count a malformed message from ``identity``; returns its count (ignored from `BAD_BEFORE_IGNORING`)."""
        if len(self.bad) >= MAX_TRACKED:
            self.bad.clear()
        count = self.bad.get(identity, 0) + 1
        self.bad[identity] = count
        if count >= BAD_BEFORE_IGNORING:
            if len(self._ignored) >= MAX_TRACKED:
                self._ignored.clear()
            self._ignored[identity] = (now if now is not None else time.monotonic()) + IGNORE_FOR_S
        return count



class Deferred:
    """Messages read past their sender's budget, waiting for the next turn: at most
    `DEFER_PER_PEER` per peer and `MAX_DEFERRED` in all (see the module docstring)."""

    def __init__(self, per_peer: int = DEFER_PER_PEER, limit: int = MAX_DEFERRED) -> None:
        self.per_peer = per_peer
        self.limit = limit
        self._items: list[tuple[bytes, Any]] = []
        self._counts: dict[bytes, int] = {}
        self.dropped = 0  # messages that could not wait (over a peer's share, or pushed out)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, identity: bytes, item: Any) -> bool:
        """Keep ``item`` from ``identity`` for the next turn; False if it is dropped instead."""
        held = self._counts.get(identity, 0)
        if held >= self.per_peer:
            self.dropped += 1
            return False
        if len(self._items) >= self.limit:
            hog = max(self._counts, key=self._counts.__getitem__)
            if self._counts[hog] <= held + 1:  # nobody holds more than this peer would: it waits no more
                self.dropped += 1
                return False
            last = max(i for i, (who, _) in enumerate(self._items) if who == hog)
            del self._items[last]  # the hog's newest goes
            self._counts[hog] -= 1
            self.dropped += 1
        self._items.append((identity, item))
        self._counts[identity] = held + 1
        return True

    def take(self) -> list[Any]:
        """Everything waiting, oldest first; the room is empty afterwards."""
        items, self._items = self._items, []
        self._counts.clear()
        return [item for _, item in items]
