"""The event stream over HTTP: places given back by clients that leave, ids that survive a
controller restart, and Last-Event-IDs that are out of range."""

# ruff: noqa: F811  (pytest fixtures imported from the helpers are parameters of the tests)
from __future__ import annotations

import gc
import threading
import time

import pytest
import requests
from conftest import wait_for
from http_helpers import TIMEOUT, HttpFarm, Submitted, sse, start_http_farm, web  # noqa: F401  (fixture)


def _open(web: HttpFarm, headers: dict[str, str] | None = None) -> requests.Response | None:
    response = requests.get(web.base + "/api/v1/events", headers={**web.auth, **(headers or {})}, stream=True,
                            timeout=TIMEOUT)
    if response.status_code == 200:
        return response
    assert response.status_code == 503, response.text
    response.close()
    return None


def test_streams_dropped_by_their_clients_give_their_place_back(web):
    """Each page load or reload opens a stream; a closed one must not hold its place until a
    garbage collection (an idle controller runs none: the collector is off here)."""
    from farm.http.sse import MAX_STREAMS

    gc.disable()
    try:
        for _ in range(MAX_STREAMS + 8):
            stream = wait_for(lambda: _open(web), timeout=20, what="a place for a new stream")
            assert next(m for m in sse(stream) if m.id is not None)  # it is streaming
            stream.close()
        held = [wait_for(lambda: _open(web), timeout=20, what="a place") for _ in range(MAX_STREAMS)]
        assert _open(web) is None  # the bound still holds
        for stream in held:
            stream.close()
    finally:
        gc.enable()


def _events_of(stream: requests.Response, count: int) -> list[tuple[str, dict]]:
    """(id, event) of the first `count` events, and every control message before them (what came
    within 30 s: an idle stream sends keep-alives for ever)."""
    out: list[tuple[str, dict]] = []
    deadline = time.monotonic() + 30
    for message in sse(stream):
        if time.monotonic() > deadline:
            break
        if message.event in ("reset", "missed"):
            out.append((message.event, message.json()))
        elif message.data:
            out.append((message.id, message.json()))
            if sum(1 for i, _ in out if i not in ("reset", "missed")) == count:
                return out
    return out


def test_a_stream_resumed_across_a_controller_restart_starts_over_with_a_reset(tmp_path, agents, synthetic):
    state = tmp_path / "state"
    first = start_http_farm(state)
    try:
        agents(first.controller.url, 1, extra=["--cache-dir", str(tmp_path / "cache")])
        summary = Submitted(first.controller.url, synthetic(jobs=10, sleep=0.0, name="before")).result()
        assert summary.ok
        with requests.get(first.base + "/api/v1/events?since=0", headers=first.auth, stream=True,
                          timeout=TIMEOUT) as stream:
            seen = _events_of(stream, first.controller.events.last)
        old_id, old_event = seen[-1]
        epoch, _, seq = old_id.partition(":")
        assert epoch == first.controller.events.epoch and int(seq) == old_event["seq"] > 20
    finally:
        first.controller.stop(shutdown_agents=True)

    second = start_http_farm(state)
    try:
        assert second.controller.events.epoch != epoch
        agents(second.controller.url, 1, extra=["--cache-dir", str(tmp_path / "cache")])
        wait_for(lambda: second.controller.events.last >= 1, what="the new controller's first event")
        newest = second.controller.events.last
        assert newest < int(seq)  # the old id is beyond every seq of the new controller
        # another run's id, early or late; a bare seq past the newest
        for resume in (old_id, f"{epoch}:1", seq):
            with requests.get(second.base + "/api/v1/events",
                              headers={**second.auth, "Last-Event-ID": resume},
                              stream=True, timeout=TIMEOUT) as stream:
                got = _events_of(stream, newest)
            assert got[0] == ("reset", {"epoch": second.controller.events.epoch, "missed": 0}), resume
            assert [e["seq"] for _, e in got[1:]] == list(range(1, newest + 1))
            assert got[-1][0] == f"{second.controller.events.epoch}:{newest}"
        # the page's own id resumes as before: nothing repeated, no reset
        own = {**second.auth, "Last-Event-ID": f"{second.controller.events.epoch}:{newest - 1}"}
        with requests.get(second.base + "/api/v1/events", stream=True, timeout=TIMEOUT,
                          headers=own) as stream:
            assert _events_of(stream, 1) == [(f"{second.controller.events.epoch}:{newest}",
                                              next(e.to_wire() for e in second.controller.events.buffer
                                                   if e.seq == newest))]
    finally:
        second.controller.stop(shutdown_agents=True)


def test_farm_events_resumes_across_a_restart_from_the_new_controllers_start(tmp_path, agents):
    """`Client.events(since)` with a seq past the controller's newest (it restarted) gets what it holds."""
    from farm.client import Client

    web = start_http_farm(tmp_path / "state")
    try:
        agents(web.controller.url, 1, extra=["--cache-dir", str(tmp_path / "cache")])
        wait_for(lambda: web.controller.events.last >= 1, what="an agent's join")
        got: list[dict] = []

        def read() -> None:
            with Client(web.controller.url, timeout=30) as client:
                got.append(next(client.events(since=10_000)))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(30)  # events never come without the fix: the controller is idle
        assert got and got[0]["seq"] == 1 and got[0]["type"] == "agent.joined"
    finally:
        web.controller.stop(shutdown_agents=True)


@pytest.mark.parametrize("value", ["99999999999999999999999", "9223372036854775808", "-5", "abc", "1:2:3",
                                   "ZZ:5", "5:", "1" * 500])
def test_an_out_of_range_or_malformed_last_event_id_is_refused_with_a_reason(web, value):
    response = web.get("/api/v1/events", headers={"Last-Event-ID": value})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Last-Event-ID" in response.json()["error"]


def test_an_out_of_range_since_is_refused_with_a_reason(web):
    response = web.get("/api/v1/events?since=99999999999999999999999")
    assert response.status_code == 422 and "query.since" in response.json()["error"]
    ok = web.get("/api/v1/events?since=9223372036854775807", stream=True)
    assert ok.status_code == 200
    ok.close()
