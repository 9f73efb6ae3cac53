"""Per-peer budgets on the controller's socket, so one noisy peer cannot starve the others.

The loop reads at most `PER_TURN` messages per turn, then dispatches, checks leases and
sends updates; within a turn each client or stranger may have `PER_PEER` messages
handled. Past its budget a peer's message waits for the next turn (an honest client answered
at once may ask again within one turn), up to `MAX_DEFERRED` of them; beyond, it is dropped.
A turn that dropped most of what it read makes the loop pause a millisecond before reading
on, so a flood costs the controller a bounded share of a core and the honest processes on
the machine keep theirs. A registered agent has no such budget (dropping its results would
lose finished work; ZeroMQ's fair queueing already gives every connection its turn), but
like anyone it is ignored for a while once it keeps sending malformed messages.
"""

from __future__ import annotations

import time

PER_TURN = 64  # messages read per loop turn, all peers together
PER_PEER = 16  # messages handled per loop turn from one client or stranger
BAD_BEFORE_IGNORING = 20  # malformed messages before a peer is ignored
IGNORE_FOR_S = 10.0
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

