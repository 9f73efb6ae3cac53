"""Byte-fair scheduling of queued requests across clients (deficit round robin).

Each round, every client with work earns a quantum of bytes and is served while its
next request fits its earned credit, so many agents fetching at once share the
bandwidth in proportion and none starves, whatever chunk sizes they ask for.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Lane(Generic[Item]):
    items: deque[tuple[Item, int]] = field(default_factory=deque)
    queued_bytes: int = 0
    deficit: int = 0


class FairQueue(Generic[Item]):
    """Per-client FIFO lanes served by deficit round robin; bounded per client."""

    def __init__(self, quantum: int, *, max_items: int = 64, max_bytes: int = 64 << 20) -> None:
        self.quantum = quantum
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._lanes: OrderedDict[Hashable, _Lane[Item]] = OrderedDict()

    def push(self, client: Hashable, item: Item, cost: int) -> bool:
        """Queue a request; False (and nothing queued) when the client is over its bounds."""
        lane = self._lanes.get(client)
        if lane is None:
            lane = self._lanes[client] = _Lane()
        if len(lane.items) >= self.max_items or lane.queued_bytes + cost > self.max_bytes:
            if not lane.items:
                del self._lanes[client]
            return False
        lane.items.append((item, cost))
        lane.queued_bytes += cost
        return True

    def pop_round(self) -> list[tuple[Hashable, Item]]:
        """One round: every waiting client gets a quantum and is served what fits in it."""
        served = []
        for client in list(self._lanes):
            lane = self._lanes[client]
            lane.deficit += self.quantum
            while lane.items and lane.items[0][1] <= lane.deficit:
                item, cost = lane.items.popleft()
                lane.deficit -= cost
                lane.queued_bytes -= cost
                served.append((client, item))
            if not lane.items:
                del self._lanes[client]  # an idle client keeps no credit
        return served

    def drop(self, client: Hashable) -> None:
        self._lanes.pop(client, None)

    def __len__(self) -> int:
        return sum(len(lane.items) for lane in self._lanes.values())

    def __bool__(self) -> bool:
        return bool(self._lanes)
