"""The event bus hands its observer thread's cheap paths the same stream: a counter that takes
counts (`EventBus.count`, the controller's `Stats.add`) counts what `Stats` counts from the
`Event`s, and an observer that names its event types (`EventBus.observe(..., types)`, the
notifier's) gets exactly those events of the stream, in order, equal to what an observer of all
gets. Real bus, its real observer thread."""

from __future__ import annotations

from types import MappingProxyType

from farm.controller.events import EventBus, Stats
from farm.notify import Notifier

REUSED, RENDERED = MappingProxyType({"reused": True}), MappingProxyType({"reused": False})


def _publish(bus: EventBus) -> None:
    """A stream of every kind: one by one, many at a time, each with its own data."""
    bus.publish("run.submitted", "r1")
    bus.publish("run.started", "r1")
    bus.publish_each("job.started", "r1", "a1", "lease", [f"k{i}" for i in range(5)],
                     [f"L{i}" for i in range(5)])
    bus.publish_jobs("job.done", "r1", "a1", ["k0", "k1"], RENDERED)
    bus.publish("job.reused", "r1", "k9")
    bus.publish("job.done", "r1", "k9", None, REUSED)
    bus.publish("job.retried", "r1", "k2", "a1", {"reason": "boom", "counted": True, "attempt": 2})
    bus.publish("job.failed", "r1", "k3", "a1", {"error": "boom", "attempts": 3})
    bus.publish_jobs("job.done", "r1", "a1", ["k4"], RENDERED)
    bus.publish("agent.joined", None, None, "a2")
    bus.publish("run.finished", "r1", None, None, {"state": "failed"})


def test_counts_from_rows_are_those_from_events_and_typed_observers_see_their_types():
    bus = EventBus()
    from_rows, from_events = Stats(), Stats()
    everything, some = [], []
    bus.count(from_rows.add)
    bus.observe(from_events)
    bus.observe(everything.append)
    bus.observe(some.append, Notifier.EVENT_TYPES | {"job.failed"})
    bus.start()
    try:
        _publish(bus)
        assert bus.drain(30)
    finally:
        bus.stop()
    counts = {"dispatched": 5, "collated": 3, "reused": 1, "failed": 1, "retried": 1}
    assert from_rows.counts == from_events.counts == counts
    assert [e.seq for e in everything] == list(range(1, bus.last + 1))
    assert some == [e for e in everything if e.type in ("run.submitted", "run.finished", "job.failed")]
    assert [e.type for e in some] == ["run.submitted", "job.failed", "run.finished"]
    assert everything[2].data == {"lease": "L0"} and everything[-1].data == {"state": "failed"}
    retried = next(e for e in everything if e.type == "job.retried")
    assert retried.data == {"reason": "boom", "counted": True, "attempt": 2}
    assert [e.data for e in everything if e.type == "job.done"] == [RENDERED, RENDERED, REUSED, RENDERED]
    assert bus.observer_errors == 0


def test_a_failing_counter_is_counted_and_the_others_go_on():
    bus = EventBus()
    seen = []

    def broken(type, n, data):
        raise ValueError("a bug in a counter")

    bus.count(broken)
    bus.observe(seen.append, ["job.done"])
    bus.start()
    try:
        bus.publish("job.started", "r", "k", "a", {"lease": "L"})
        bus.publish("job.done", "r", "k", "a", RENDERED)
        assert bus.drain(30)
    finally:
        bus.stop()
    assert bus.observer_errors == 2
    assert [(e.seq, e.type) for e in seen] == [(2, "job.done")]
