"""A group of plain successes in which one job had failed before (a strike to lift: `Conduct`) is
recorded job by job in `farm.controller.settling.record_done`, and leaves exactly what settling
each result by itself leaves: the same journal rows, events, job-log attempts in memory and on
disk, agent counters. A real controller, a peer speaking the agent protocol on a real socket, real
SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import zmq
from conftest import wait_for
from control_helpers import installed_plugin, media_type_source
from peer_helpers import peer_run
from wire_helpers import job_map, result_row

from farm.controller import settling
from farm.controller.joblogpacks import attempts_of
from farm.controller.joblogstore import FILE as JOBLOGS_FILE
from farm.controller.server import JOURNAL_FILE
from farm.protocol import T, pack, unpack

FLAKY = media_type_source("strikemix", "[f'j{i:02d}' for i in range(6)]", """
        def cache_settings(self, settings):
            return None
""")
OK = {"ok": True, "result": None, "files": [], "duration": 0.01}


def _jobs(sock: zmq.Socket, count: int) -> dict[str, str]:
    """Key -> lease of the next `count` jobs the peer is sent."""
    lease: dict[str, str] = {}
    while len(lease) < count:
        assert sock.poll(30_000), f"only {sorted(lease)} came"
        msg = unpack(sock.recv_multipart())
        if msg.type is T.JOBS:
            lease.update({job["key"]: job["lease"] for job in map(job_map, msg.body["jobs"])})
    return lease


def _settle(tmp_path: Path) -> dict[str, Any]:
    with peer_run(tmp_path, "strikemix", "flaky", 8) as (ctl, sock, run_id):
        run = ctl.runs[run_id]
        first = _jobs(sock, 6)
        sock.send_multipart(pack(T.RESULTS, {"results": [result_row(r) for r in [
            {**OK, "lease": first["j00"], "log": "zero\n"},
            {"lease": first["j01"], "ok": False, "result": None, "files": [], "error": "flaky", "log": "t",
             "duration": 0.02}]]}))
        again = _jobs(sock, 1)  # j01, retried
        sock.send_multipart(pack(T.RESULTS, {"results": [result_row(r) for r in [
            {**OK, "lease": first["j02"], "result": 2}, {**OK, "lease": again["j01"], "log": "one\n"},
            {**OK, "lease": first["j03"], "duration": 0.5}, {**OK, "lease": first["j04"]},
            {**OK, "lease": first["j05"], "result": [5]}]]}))
        wait_for(lambda: run.done == 6, what="every job done")
        agent = ctl.registry.by_id("peer")
        counters = (agent.done, agent.failed, agent.avg_job_s)
        attempts = {key: run.logs.attempts(key) for key in sorted(first)}
        names = {run_id: "RUN", **{v: f"{k}#1" for k, v in first.items()}, again["j01"]: "j01#2"}
        events = [(e.seq, e.type, names.get(e.run, e.run), e.job, e.agent,
                   {k: names.get(v, v) if isinstance(v, str) else v for k, v in e.data.items()})
                  for e in ctl.events.buffer if e.type not in ("progress", "run.finished")]
        assert ctl.events.drain(30)  # the counts are the events thread's
        stats = ctl.stats
    db = sqlite3.connect(tmp_path / "state" / JOURNAL_FILE)
    rows = [(key, state, names.get(lease), *rest) for key, state, lease, *rest in db.execute(
        "SELECT key, state, lease, agent, result, error, log, attempts, reused FROM jobs ORDER BY key")]
    db.close()
    logs = sqlite3.connect(tmp_path / "state" / JOBLOGS_FILE)
    on_disk = attempts_of(logs, run_id)  # its rows and packs, in the order recorded
    logs.close()
    return {"events": events, "rows": rows, "attempts": attempts, "on_disk": on_disk, "counters": counters,
            "stats": {k: stats[k] for k in ("dispatched", "collated", "retried", "failed")}}


def test_a_group_with_a_struck_job_is_recorded_as_one_by_one(tmp_path, monkeypatch):
    installed_plugin(tmp_path / "site", "farm_strikemix_test", FLAKY, "strikemix")
    grouped: list[tuple[list[str], bool]] = []
    record_done = settling.record_done

    def recorded(group):
        grouped.append((list(group.keys), bool(group.run.conduct.failed_on)))
        record_done(group)

    monkeypatch.setattr(settling, "record_done", recorded)
    batched = _settle(tmp_path / "batched")
    assert grouped == [(["j00"], False), (["j02", "j01", "j03", "j04", "j05"], True)]  # the second: by job
    monkeypatch.setattr(settling, "plain", lambda *args: False)  # every result by itself
    single = _settle(tmp_path / "single")
    assert len(grouped) == 2

    for part in ("events", "rows", "attempts", "on_disk", "counters", "stats"):
        assert batched[part] == single[part], part
    assert [a["state"] for a in batched["attempts"]["j01"]] == ["failed", "done"]
    assert batched["attempts"]["j01"][1]["log"] == "one\n"
    assert batched["counters"][:2] == (6, 1)
