"""The controller's event stream: what happened, in order, for observers and subscribers.

Every event has a per-controller sequence number (``seq``, from 1, no gaps; a restarted
controller counts again from 1, so seqs are only comparable within one ``epoch``: a random id
of this controller's run, sent with every batch), a wall-clock
``time`` (seconds since the epoch), a ``type`` (one of `EVENT_TYPES`) and the run, job and
agent it concerns (None where it concerns none). The loop thread publishes; publishing is an
append to two bounded deques and never waits on an observer:

- the *buffer* keeps the last `BUFFER_EVENTS` events, for remote subscribers that resume
  from a sequence number (``farm events --since SEQ``);
- the *pending* queue feeds in-process observers (the ``farm_event`` plugin hook, and
  callables given to `EventBus.observe`) from one thread of their own, so a slow or failing
  observer never delays dispatch or heartbeats. An observer that falls more than
  `PENDING_EVENTS` behind misses the oldest (counted in `EventBus.dropped`).

Both hold an event as a plain tuple (its data as one flat tuple: field, value, field, value...;
one tuple per event, not one per field and one more), made into an `Event` only
when read: a tuple of plain values is one the cyclic garbage collector stops tracking, so the
hundred thousand buffered events cost a full collection nothing (as `Event` objects, which stay
tracked, they cost every one of them a walk over the whole buffer: milliseconds, in the loop).
A message's jobs (`publish_jobs`, `publish_each`: one event per job, numbered one by one) are kept
as ONE tuple, a *group* (`Group`), and made into one event per job only where a reader asks for
them (`since`, the buffer's view, an observer of their type); counters take a group's count
(`EventBus.count`) and an observer may take it whole (`observe(..., together=True)`), so the loop
and the observer thread pay per message, not per job. Both bounds count events, not tuples: the
oldest group is cut where the bound falls.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from operator import itemgetter
from types import MappingProxyType
from typing import Any, NamedTuple

from farm.words import counted

log = logging.getLogger(__name__)

BUFFER_EVENTS = 100_000  # events kept for subscribers that resume from a sequence number
PENDING_EVENTS = 100_000  # events queued for in-process observers before the oldest are dropped
OBSERVER_POLL_S = 0.02  # how often the observer thread looks for new events when idle

EVENT_TYPES = frozenset({
    "run.submitted", "run.started", "run.paused", "run.resumed", "run.priority", "run.finished",
    "job.started", "job.done", "job.failed", "job.retried", "job.reused",
    "agent.joined", "agent.left", "agent.blocklisted", "agent.broken", "agent.draining", "agent.undrained",
    "progress",
})


class Event(NamedTuple):
    """One thing that happened. ``data`` holds the type's own fields (a finished run's state...)."""

    seq: int
    time: float
    type: str
    run: str | None = None
    job: str | None = None
    agent: str | None = None
    data: Mapping[str, Any] = MappingProxyType({})

    def to_wire(self) -> dict[str, Any]:
        """The event as one flat JSON/msgpack object (``data``'s fields beside the common ones)."""
        return {**self.data, "seq": self.seq, "time": self.time, "type": self.type, "run": self.run,
                "job": self.job, "agent": self.agent}


class Published(NamedTuple):
    """Events of one type published together (`EventBus.observe(..., together=True)`): one event, or
    a message's group. Event i is about job ``jobs[i]``, its seq ``seq + i``, its data ``data`` and,
    where ``field`` is not None, ``{field: values[i]}`` besides."""

    seq: int
    time: float
    type: str
    run: str | None
    agent: str | None
    jobs: tuple[str | None, ...]
    data: Mapping[str, Any]
    field: str | None = None
    values: tuple[Any, ...] | None = None

    def events(self) -> list[Event]:
        """The same, one `Event` each."""
        if self.field is None:
            return [Event(seq, self.time, self.type, self.run, job, self.agent, self.data)
                    for seq, job in zip(itertools.count(self.seq), self.jobs)]
        assert self.values is not None
        return [Event(seq, self.time, self.type, self.run, job, self.agent, {**self.data, self.field: value})
                for seq, job, value in zip(itertools.count(self.seq), self.jobs, self.values)]


Observer = Callable[[Event], None]
#: a counter (`EventBus.count`): (type, how many events, the data they all share: field, value...)
Counter = Callable[[str, int, tuple[Any, ...]], None]
_NO_DATA: Mapping[str, Any] = MappingProxyType({})
_now = time.time
#: an event as the bus keeps it: (seq, time, type, run, job, agent, data as (field, value, field, value...))
Row = tuple[int, float, str, "str | None", "str | None", "str | None", tuple[Any, ...]]
#: a message's events as the bus keeps them, one per job of ``jobs`` (event i: seq ``first + i``,
#: job ``jobs[i]``): (first, time, type, run, jobs, agent, the data they share, the field each has a
#: value of its own for or None, those values in the jobs' order or None)
Group = tuple[int, float, str, "str | None", tuple[Any, ...], "str | None", tuple[Any, ...], "str | None",
              "tuple[Any, ...] | None"]
_SEQ = itemgetter(0)


def _event(row: Row, _new: Any = tuple.__new__) -> Event:
    seq, at, kind, run, job, agent, flat = row  # made as `Event._make` does: half the cost of Event(...)
    data = dict(zip(flat[::2], flat[1::2])) if flat else _NO_DATA
    return _new(Event, (seq, at, kind, run, job, agent, data))


def _flat(data: Mapping[str, Any]) -> tuple[Any, ...]:
    """Event data as a row keeps it: field, value, field, value..."""
    return tuple(itertools.chain.from_iterable(data.items())) if data else ()


def _published(kept: Row | Group) -> Published:
    if len(kept) == 7:
        seq, at, kind, run, job, agent, flat = kept
        kept = (seq, at, kind, run, (job,), agent, flat, None, None)
    first, at, kind, run, jobs, agent, flat, field, values = kept
    data = MappingProxyType(dict(zip(flat[::2], flat[1::2]))) if flat else _NO_DATA  # (shared by its events)
    return Published(first, at, kind, run, agent, jobs, data, field, values)


def _size(kept: Row | Group) -> int:
    """How many events a kept tuple holds."""
    return 1 if len(kept) == 7 else len(kept[4])


def _rows(kept: Row | Group, start: int = 0, stop: int | None = None) -> list[Row]:
    """Events `start` to `stop` (its own places, from 0) of a kept tuple, as `Row`s."""
    if len(kept) == 7:
        return [kept] if start == 0 and stop != 0 else []
    first, at, kind, run, jobs, agent, flat, field, values = kept
    seqs = itertools.count(first + start)
    if field is None:
        return [(seq, at, kind, run, job, agent, flat) for seq, job in zip(seqs, jobs[start:stop])]
    return [(seq, at, kind, run, job, agent, (*flat, field, value))
            for seq, job, value in zip(seqs, jobs[start:stop], values[start:stop])]


def _trim(kept: collections.deque[Any], excess: int) -> int:
    """Cut the oldest `excess` events off `kept` (a group where the cut falls loses its first ones)."""
    cut = 0
    while cut < excess and kept:
        oldest = kept[0]
        size = _size(oldest)
        if cut + size <= excess:
            kept.popleft()
            cut += size
            continue
        first, at, kind, run, jobs, agent, flat, field, values = oldest
        k = excess - cut
        kept[0] = (first + k, at, kind, run, jobs[k:], agent, flat, field,
                   None if values is None else values[k:])
        cut = excess
    return cut


class _Buffered:
    """The buffered events as `Event`s, oldest first (a read-only view, for tests and tools)."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def __iter__(self) -> Iterator[Event]:
        return map(_event, itertools.chain.from_iterable(map(_rows, list(self._bus._rows))))

    def __len__(self) -> int:
        return self._bus._buffered


class EventBus:
    """Numbers, buffers and hands out events. The ``publish`` methods are for the loop thread only."""

    def __init__(self, *, buffer: int = BUFFER_EVENTS, pending: int = PENDING_EVENTS,
                 hook: Observer | None = None) -> None:
        self.last = 0  # the newest event's seq (events are numbered from 1)
        self.epoch = secrets.token_hex(4)  # names this run of the controller: seqs restart with it
        self._rows: collections.deque[Row | Group] = collections.deque()
        self._bound, self._buffered = buffer, 0  # events kept at most, and kept now
        self.buffer = _Buffered(self)
        self._pending: collections.deque[Row | Group] = collections.deque()
        self._pending_bound = pending
        # events put in pending (loop thread), cut off it for its bound (loop), taken (observer thread)
        self._queued = self._cut = self._taken = 0
        self._pending_lock = threading.Lock()  # a cut and a take of pending's oldest, one at a time
        # observers, each with the event types it wants (None: all) and whether it takes them together;
        # counters, which take counts
        self._observers: list[tuple[Any, frozenset[str] | None, bool]] = []
        if hook is not None:
            self._observers.append((hook, None, False))
        self._counters: list[Counter] = []
        # event type -> its observers of each event, and of events together (made when first asked)
        self._for_type: dict[str, tuple[list[Observer], list[Callable[[Published], None]]]] = {}
        self._watched = bool(self._observers)  # events go to the observer thread
        self._handed = 0  # the newest seq handed to observers
        self.dropped = 0  # events observers never saw (they fell too far behind)
        self.observer_errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def observe(self, observer: Callable[[Any], None], types: Collection[str] | None = None, *,
                together: bool = False) -> None:
        """Call `observer(event)` for every event from now on (every one of `types`, if given), in the
        observer thread; with `together`, `observer(published)` once for the events published
        together (a `Published`: one event, or a message's group), so it may count a group at once."""
        self._observers.append((observer, None if types is None else frozenset(types), together))
        self._for_type = {}
        self._watched = True

    def count(self, counter: Counter) -> None:
        """Call `counter(type, n, data)` for every event from now on, in the observer thread before the
        observers: `n` events (1, or a message's group) of `type` whose data all hold `data` (field,
        value, field, value...; a field each event has a value of its own for, `publish_each`'s, is not
        in it). For the controller's own counts: no `Event` is made for them, nor a call per job."""
        self._counters.append(counter)
        self._watched = True

    def _keep(self, kept: Row | Group, size: int) -> None:
        """Buffer `kept` (`size` events) and queue it for the observers, each within its bound."""
        self._rows.append(kept)
        self._buffered += size
        if self._buffered > self._bound:
            self._buffered -= _trim(self._rows, self._buffered - self._bound)
        if self._watched:
            self._pending.append(kept)
            self._queued += size
            if self._queued - self._cut - self._taken > self._pending_bound:
                with self._pending_lock:
                    excess = self._queued - self._cut - self._taken - self._pending_bound
                    self._cut += _trim(self._pending, excess)

    def publish(self, type: str, run: str | None = None, job: str | None = None, agent: str | None = None,
                data: Mapping[str, Any] = _NO_DATA) -> int:
        """Announce one event (a type of `EVENT_TYPES`; `data` is copied); returns its seq. On the
        loop's thread only."""
        self.last = seq = self.last + 1
        self._keep((seq, _now(), type, run, job, agent, _flat(data)), 1)
        return seq

    def publish_jobs(self, type: str, run: str | None, agent: str | None, jobs: Iterable[str | None],
                     data: Mapping[str, Any] = _NO_DATA) -> int:
        """`publish` of one event per job of `jobs`, in order, all with this type, run, agent and `data`:
        the same events (numbered one by one, one time) kept as one group. Returns the last seq. Loop
        thread only."""
        jobs = tuple(jobs)
        if jobs:
            first, self.last = self.last + 1, self.last + len(jobs)
            self._keep((first, _now(), type, run, jobs, agent, _flat(data), None, None), len(jobs))
        return self.last

    def publish_each(self, type: str, run: str | None, agent: str | None, field: str,
                     jobs: Iterable[str | None], values: Iterable[Any]) -> int:
        """`publish` of one event per job of `jobs`, in order, all with this type, run and agent, and
        data ``{field: value}`` with the value of the same place in `values` (as many: ValueError
        otherwise): the same events (numbered one by one, one time) kept as one group. Returns the
        last seq. Loop thread only."""
        jobs, values = tuple(jobs), tuple(values)
        if len(jobs) != len(values):
            raise ValueError(f"{len(jobs)} jobs but {len(values)} values of {field!r}")
        if jobs:
            first, self.last = self.last + 1, self.last + len(jobs)
            self._keep((first, _now(), type, run, jobs, agent, (), field, values), len(jobs))
        return self.last

    def since(self, seq: int, limit: int) -> tuple[list[Event], int]:
        """Up to `limit` buffered events after `seq`, and how many after `seq` are gone from the buffer."""
        kept = self._rows
        if not kept or seq >= self.last or limit <= 0:
            return [], 0
        first = kept[0][0]
        missed = max(0, first - seq - 1)
        want = max(seq + 1, first)
        # the tuple holding `want`: each holds one event or more, so it is no further back than this
        lo = max(0, len(kept) - (self.last - want + 1))
        at = bisect.bisect_right(kept, want, lo, key=_SEQ) - 1
        if at >= len(kept) // 2:  # deques walk from an end: from the newest, for a reader near the head
            tail: Iterable[Row | Group] = list(itertools.islice(reversed(kept), len(kept) - at))[::-1]
        else:
            tail = itertools.islice(kept, at, None)
        rows: list[Row] = []
        for one in tail:
            start = want - one[0] if not rows else 0
            rows += _rows(one, start, start + limit - len(rows))
            if len(rows) >= limit:
                break
        return [_event(row) for row in rows], missed

    # -- the observer thread ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._deliver, name="farm-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within `timeout`), then end the observer thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until observers have seen every event published so far; True if they have."""
        deadline = time.monotonic() + timeout
        target = self.last
        while self._watched and self._handed < target and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._watched or self._handed >= target

    def _deliver(self) -> None:
        pending, lock = self._pending, self._pending_lock
        while True:
            stopping = self._stop.is_set()
            while pending:
                with lock:  # (a cut for the bound may be under way)
                    kept = pending.popleft()
                    size = 1 if len(kept) == 7 else len(kept[4])
                    self._taken += size
                seq, kind = kept[0], kept[2]
                if seq > self._handed + 1:
                    self.dropped += seq - self._handed - 1
                for counter in self._counters:
                    try:
                        counter(kind, size, kept[6])
                    except Exception:
                        self._failed(counter, kind)
                for_type = self._for_type  # (`observe` puts a new one in place: never one made before it)
                wanted = for_type.get(kind)
                if wanted is None:
                    mine = [(o, joint) for o, types, joint in self._observers
                            if types is None or kind in types]
                    wanted = for_type[kind] = ([o for o, joint in mine if not joint],
                                               [o for o, joint in mine if joint])
                observers, together = wanted
                if observers:
                    for row in _rows(kept):
                        event = _event(row)
                        for observer in observers:
                            try:
                                observer(event)
                            except Exception:
                                self._failed(observer, kind)
                if together:
                    published = _published(kept)
                    for observer in together:
                        try:
                            observer(published)
                        except Exception:
                            self._failed(observer, kind)
                self._handed = seq + size - 1
            if stopping:
                return
            self._stop.wait(OBSERVER_POLL_S)

    def _failed(self, observer: Any, type: str) -> None:
        self.observer_errors += 1
        if self.observer_errors <= 20 or self.observer_errors % 1000 == 0:
            log.exception("event observer %r failed on %s (%s so far)", observer, type,
                          counted(self.observer_errors, "failure"))


COUNTED = {"job.started": "dispatched", "job.done": "collated", "job.reused": "reused", "job.failed": "failed",
           "job.retried": "retried"}  # event type -> the stat it counts


class Stats:
    """Counters kept by watching the stream (an observer like any other)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTED.values(), 0)

    def __call__(self, event: Event) -> None:
        name = COUNTED.get(event.type)
        if name == "collated" and event.data.get("reused"):
            return  # collated counts what agents rendered; reused ones are counted apart
        if name is not None:
            self.counts[name] += 1

    def add(self, type: str, n: int, data: tuple[Any, ...]) -> None:
        """The same count from `n` events of `type` whose data all hold `data` (an `EventBus.count`
        counter: no `Event` made)."""
        name = COUNTED.get(type)
        if name is None:
            return
        if name == "collated":
            for i in range(0, len(data), 2):
                if data[i] == "reused" and data[i + 1]:
                    return
        self.counts[name] += n


MAX_SUBSCRIBERS = 64  # remote `farm events` connections at once
BATCH_EVENTS = 1000  # events per EVENT_BATCH message (a subscriber behind gets more next turn)
IDLE_BATCH_S = 1.0  # an empty batch this often tells an idle subscriber the controller is alive
SUBSCRIPTION_S = 30.0  # a subscriber that has not renewed (sent EVENTS again) for this long is dropped


class Subscribers:
    """Remote subscribers (client routing ids) and how far each has read. Loop thread only."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        # identity -> [last seq sent, last sent, renewed, reset not yet announced]
        self.cursors: dict[bytes, list[Any]] = {}

    def subscribe(self, identity: bytes, since: int | None, epoch: str | None = None) -> str | None:
        """Send `identity` every event after `since` (None: from now on); returns an error, if refused.

        A `since` of another controller run (`epoch` not ours) or beyond our newest event means the
        subscriber counted on a controller since restarted: it gets every buffered event, and its
        first batch says ``reset`` (what it knew is stale)."""
        if identity not in self.cursors and len(self.cursors) >= MAX_SUBSCRIBERS:
            return f"the controller has {MAX_SUBSCRIBERS} event subscribers already"
        foreign = epoch is not None and epoch != self.bus.epoch
        reset = since is not None and (foreign or since > self.bus.last)
        start = self.bus.last if since is None else 0 if reset else max(0, since)
        self.cursors[identity] = [start, 0.0, time.monotonic(), reset]
        return None

    def send(self, send: Callable[..., bool]) -> None:
        """Send each subscriber what it has not had (a bounded batch); drop those that cannot take it."""
        if not self.cursors:
            return
        from farm.protocol import T  # the bus itself knows nothing of the wire

        now = time.monotonic()
        for identity, cursor in list(self.cursors.items()):
            if now - cursor[2] > SUBSCRIPTION_S:
                del self.cursors[identity]
                continue
            events, missed = self.bus.since(int(cursor[0]), BATCH_EVENTS)
            if not events and not missed and not cursor[3] and now - cursor[1] < IDLE_BATCH_S:
                continue
            body = {"events": [e.to_wire() for e in events], "missed": missed, "last": self.bus.last,
                    "epoch": self.bus.epoch, "reset": bool(cursor[3])}
            if not send(identity, T.EVENT_BATCH, body):
                del self.cursors[identity]  # gone, or not reading: it may resume with --since
                continue
            if events:
                cursor[0] = events[-1].seq
            cursor[1] = now
            cursor[3] = False
