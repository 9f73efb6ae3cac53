"""A message's events kept as one group (`EventBus.publish_jobs`, `publish_each`) read back as the
same events as when published one by one: through `since` (every start and limit), the buffer's
view, a remote subscriber's batches (`Subscribers.send`) and the observer thread (observers of all
and of some types, counters), with the same seqs, data and counts, and both bounds (the buffer's, the
observers' queue) applied at the same event even where they fall inside a group. Real buses, their
real observer threads; the subscriber's socket is the list its batches are sent to; the HTTP API's
metrics taking groups together (`Metrics.observe_published`) count what they count one by one. The observer
thread starts after the whole stream is published (its queue meets its bound), or at once and is held
by an observer at the stream's first `job.retried` (what it took counts against the bound no more)."""

from __future__ import annotations

import threading
from types import MappingProxyType

import pytest

from farm.controller.events import EventBus, Stats, Subscribers
from farm.http.metrics import Metrics
from farm.notify import Notifier

RENDERED, REUSED = MappingProxyType({"reused": False}), MappingProxyType({"reused": True})


def _jobs(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


#: the stream: ("one", type, run, job, agent, data), ("jobs", type, run, agent, jobs, data) or
#: ("each", type, run, agent, field, jobs, values); groups of 1, of many, of none, larger than a bound
STREAM = [
    ("one", "run.submitted", "r1", None, None, {"media_type": "synthetic"}),
    ("one", "run.started", "r1", None, None, {}),
    ("each", "job.started", "r1", "a1", "lease", _jobs("k", 13), _jobs("L", 13)),
    ("jobs", "job.done", "r1", "a1", _jobs("k", 5), RENDERED),
    ("one", "job.retried", "r1", "k5", "a1", {"reason": "boom", "counted": True, "attempt": 2}),
    ("jobs", "job.done", "r1", "a1", [], RENDERED),
    ("each", "job.started", "r1", "a2", "lease", [], []),
    ("jobs", "job.done", "r1", "a2", ["k6"], RENDERED),
    ("one", "job.reused", "r1", "k9", None, {}),
    ("one", "job.done", "r1", "k9", None, REUSED),
    ("each", "job.started", "r1", "a2", "lease", _jobs("m", 40), _jobs("M", 40)),
    ("jobs", "job.done", "r1", "a2", _jobs("m", 40), RENDERED),
    ("jobs", "job.done", "r1", "a1", _jobs("k", 7)[6:], {}),
    ("one", "job.failed", "r1", "k12", "a1", {"error": "boom", "attempts": 3}),
    ("each", "job.started", "r1", "a1", "lease", ["n0", "n1", "n2"], ["N0", "N1", "N2"]),
    ("jobs", "job.done", "r1", "a1", ["n0", "n1", "n2"], RENDERED),
    ("one", "agent.left", None, None, "a2", {"reason": "gone"}),
    ("one", "run.finished", "r1", None, None, {"state": "failed"}),
]


def _publish(bus: EventBus, step: tuple, grouped: bool) -> None:
    how, kind, run = step[:3]
    if how == "one":
        bus.publish(kind, run, step[3], step[4], step[5])
    elif how == "jobs":
        agent, jobs, data = step[3:]
        if grouped:
            bus.publish_jobs(kind, run, agent, jobs, data)
        else:
            for job in jobs:
                bus.publish(kind, run, job, agent, data)
    else:
        agent, field, jobs, values = step[3:]
        if grouped:
            bus.publish_each(kind, run, agent, field, jobs, values)
        else:
            for job, value in zip(jobs, values, strict=True):
                bus.publish(kind, run, job, agent, {field: value})


def _seen(events) -> list[tuple]:
    """Events as compared: everything but their time (each publish reads the clock)."""
    return [(e.seq, e.type, e.run, e.job, e.agent, dict(e.data)) for e in events]


def _wire(batch: dict) -> dict:
    """A batch as compared: its events without their time, and not the bus's random epoch."""
    events = [{k: v for k, v in e.items() if k != "time"} for e in batch["events"]]
    return {**{k: v for k, v in batch.items() if k != "epoch"}, "events": events}


class Watched:
    """A bus with every kind of reader: counters, observers of all and of some types, a subscriber."""

    def __init__(self, grouped: bool, **bounds: int) -> None:
        self.grouped = grouped
        self.bus = EventBus(**bounds)
        self.counted, self.observed = Stats(), Stats()
        self.everything: list = []
        self.some: list = []
        self.bus.count(self.counted.add)
        self.bus.observe(self.observed)
        self.bus.observe(self.everything.append)
        self.bus.observe(self.some.append, Notifier.EVENT_TYPES | {"job.done"})
        self.bus.observe(self._hold, ["job.retried"])
        self.together: list = []  # what an observer of events published together expands them to
        self.bus.observe(lambda published: self.together.extend(published.events()), together=True)
        self.held, self.release = threading.Event(), threading.Event()
        self.subscribers = Subscribers(self.bus)
        self.subscribers.subscribe(b"reader", 0)
        self.batches: list[dict] = []

    def _send(self, identity: bytes, kind, body: dict) -> bool:
        if body["events"] or body["missed"]:  # (an idle batch goes by the clock)
            self.batches.append(_wire(body))
        return True

    def _hold(self, event) -> None:
        self.held.set()
        assert self.release.wait(30)

    def publish_all(self, send_every: int, held: bool) -> None:
        if held:
            self.bus.start()
        for i, step in enumerate(STREAM):
            _publish(self.bus, step, self.grouped)
            if held and step[1] == "job.retried":
                assert self.held.wait(30)  # the thread took all so far, and takes no more
            if i % send_every == 0:
                self.subscribers.send(self._send)
        self.subscribers.send(self._send)

    def deliver(self, held: bool) -> None:
        self.release.set()
        if not held:
            self.bus.start()
        try:
            assert self.bus.drain(30)
        finally:
            self.bus.stop()


HELD_AT = 21  # events up to the first job.retried: within the queue's bound, held or not


@pytest.mark.parametrize(("bounds", "held"), [({}, False), ({}, True), ({"buffer": 37, "pending": 23}, False),
                                              ({"buffer": 37, "pending": 23}, True),
                                              ({"buffer": 1, "pending": 1}, False)])
@pytest.mark.parametrize("send_every", [1, 4])
def test_grouped_events_read_back_as_one_by_one(bounds, held, send_every):
    grouped, single = Watched(True, **bounds), Watched(False, **bounds)
    for side in (grouped, single):
        side.publish_all(send_every, held)
    total = sum(1 if s[0] == "one" else len(s[4] if s[0] == "jobs" else s[5]) for s in STREAM)
    assert grouped.bus.last == single.bus.last == total

    assert _seen(grouped.bus.buffer) == _seen(single.bus.buffer)
    assert len(grouped.bus.buffer) == len(single.bus.buffer) == min(total, bounds.get("buffer", total))
    assert [e.seq for e in grouped.bus.buffer] == list(range(total - len(grouped.bus.buffer) + 1, total + 1))
    for seq in range(total + 2):
        for limit in (1, 2, 3, 7, 50, 1000):
            events, missed = grouped.bus.since(seq, limit)
            expected, expected_missed = single.bus.since(seq, limit)
            assert (_seen(events), missed) == (_seen(expected), expected_missed), (seq, limit)
    assert grouped.batches == single.batches and grouped.batches

    for side in (grouped, single):
        side.deliver(held)
    assert _seen(grouped.everything) == _seen(single.everything)
    assert _seen(grouped.some) == _seen(single.some)
    assert _seen(grouped.together) == _seen(single.together) == _seen(single.everything)
    assert grouped.bus.dropped == single.bus.dropped == total - len(single.everything)
    taken = HELD_AT if held else 0  # (then the queue held only what came after)
    kept = min(total - taken, bounds.get("pending", total))
    assert [e.seq for e in grouped.everything] == [*range(1, taken + 1), *range(total - kept + 1, total + 1)]
    counts = grouped.counted.counts
    assert counts == grouped.observed.counts == single.counted.counts == single.observed.counts
    assert grouped.bus.observer_errors == single.bus.observer_errors == 0
    if not bounds:
        assert single.bus.dropped == 0
        assert counts == {"dispatched": 56, "collated": 50, "reused": 1, "failed": 1, "retried": 1}


def test_each_values_must_match_the_jobs():
    bus = EventBus()
    with pytest.raises(ValueError, match="3 jobs but 2 values"):
        bus.publish_each("job.started", "r1", "a1", "lease", ["k0", "k1", "k2"], ["L0", "L1"])
    assert bus.last == 0 and not list(bus.buffer)


def _samples(metrics: Metrics) -> list[tuple]:
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for family in metrics.registry.collect()
                  for s in family.samples if not s.name.endswith("_created"))


def test_http_metrics_count_groups_as_events_one_by_one():
    """The HTTP API's metrics taking a message's events together count what they count one by one:
    jobs done, reused, failed, retried, and every rendered job's duration from its dispatch."""
    bus = EventBus()
    one_by_one, together = Metrics(), Metrics()
    bus.observe(one_by_one.observe)
    bus.observe(together.observe_published, together=True)
    bus.start()
    try:
        for step in STREAM:
            _publish(bus, step, grouped=True)
        bus.publish("run.submitted", "r2", None, None, {"media_type": "audio"})
        bus.publish_each("job.started", "r2", "a1", "lease", _jobs("p", 6), _jobs("P", 6))
        bus.publish_jobs("job.done", "r2", "a1", _jobs("p", 2), RENDERED)
        bus.publish_jobs("job.done", "r2", "a1", _jobs("p", 4)[2:], REUSED)
        bus.publish_jobs("job.done", "r2", "a1", _jobs("p", 6)[4:], {"duration_s": 1.5})
        bus.publish_jobs("job.done", "r2", "a1", ["p9"], RENDERED)
        assert bus.drain(30)
    finally:
        bus.stop()
    assert bus.observer_errors == 0
    samples = _samples(together)
    assert samples == _samples(one_by_one)
    done = {labels: value for name, labels, value in samples if name == "farm_jobs_done_total"}
    assert done == {(("media_type", "synthetic"),): 51, (("media_type", "audio"),): 7}
    timed = {labels: value for name, labels, value in samples if name == "farm_job_duration_seconds_count"}
    assert timed == {(("media_type", "synthetic"),): 49, (("media_type", "audio"),): 4}
