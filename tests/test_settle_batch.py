"""A RESULTS message is settled in one pass (`farm.controller.settling`): its plain successes a
group at a time, the rest one by one in between. A message that mixes every kind of result
(successes with and without a log or a value, a failure that is retried, one the plugin fails for
good, a hand-back, a collate that raises, a duplicate and an unknown lease, a success that frees a
waiting job) leaves exactly what settling each result by itself leaves: the same journal rows, the
same events with the same fields in the same order, the same job-log attempts in memory and on
disk, the same agent counters. A real controller, a peer speaking the agent protocol on a real
socket, real SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from control_helpers import installed_plugin, media_type_source
from peer_helpers import peer_run
from wire_helpers import job_map, result_row

from farm.controller import settling
from farm.controller.joblogpacks import attempts_of
from farm.controller.joblogstore import FILE as JOBLOGS_FILE
from farm.controller.server import JOURNAL_FILE
from farm.protocol import T, pack, unpack

#: j09 waits for j03; the collate of j05 raises (an attempt of j05, retried); no job cache (a job
#: whose outputs go to the cache is settled by itself)
MIXED = media_type_source("batchmix", "[f'j{i:02d}' for i in range(12)]", """
        def cache_settings(self, settings):
            return None

        def split(self, project):
            for i in range(12):
                yield Job(f"j{i:02d}", deps=("j03",) if i == 9 else ())

        def collate(self, job, result, outputs, ctx):
            if job.key == "j05":
                raise ValueError("j05's outputs do not add up")
""")


def _answers(lease: dict[str, str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One message's results for the first eleven jobs (key -> lease): every kind, mixed."""
    ok = {"ok": True, "result": None, "files": [], "duration": 0.01}
    results = [
        {**ok, "lease": lease["j00"]},
        {**ok, "lease": lease["j01"], "result": {"frames": [1, 2]}, "log": "rendered j01\n", "duration": 0.5},
        {"lease": lease["j02"], "ok": False, "result": None, "files": [], "error": "boom", "log": "trace j02",
         "duration": 0.02},
        {**ok, "lease": lease["j03"], "result": 3},
        {**ok, "lease": lease["j00"]},  # a duplicate: stale by now
        {"lease": lease["j04"], "ok": False, "result": None, "files": [], "error": "not started: busy",
         "duration": 0.0, "requeue": True},
        {**ok, "lease": lease["j05"], "log": "j05 fine here"},  # its collate raises
        {**ok, "lease": lease["j06"], "duration": 1},
        {**ok, "lease": "0123abcd-nobody"},  # no such lease
        {"lease": lease["j07"], "ok": False, "result": None, "files": [], "error": "bad scene",
         "duration": 0.03, "retry": False},
        {**ok, "lease": lease["j08"], "duration": 0.25},
        {**ok, "lease": lease["j10"], "result": "ten"},
        {**ok, "lease": lease["j11"], "result": [11, 11.5]},
    ]
    return results, ["j00", "j01", "j03", "j06", "j08", "j10", "j11"]


def _settle_mixed(tmp_path: Path) -> dict[str, Any]:
    """Run the mixed message through a fresh controller; what it left, lease ids and run ids named
    by their job and the run (they are random)."""
    with peer_run(tmp_path, "batchmix", "mixed", 16) as (ctl, sock, run_id):
        lease: dict[str, str] = {}
        while len(lease) < 11:  # all but j09, which waits for j03
            assert sock.poll(30_000), f"only {sorted(lease)} came"
            msg = unpack(sock.recv_multipart())
            if msg.type is T.JOBS:
                lease.update({job["key"]: job["lease"] for job in map(job_map, msg.body["jobs"])})
        results, done = _answers(lease)
        sock.send_multipart(pack(T.RESULTS, {"results": list(map(result_row, results))}))
        run = ctl.runs[run_id]
        wait_for(lambda: run.done == len(done) and ctl.health["stale"] == 2, what="the message settled")
        again: set[str] = set()
        while "j09" not in again:  # the next turn's dispatch: j03 done freed it
            assert sock.poll(30_000), f"only {sorted(again)} came again"
            msg = unpack(sock.recv_multipart())
            if msg.type is T.JOBS:
                again |= {job["key"] for job in map(job_map, msg.body["jobs"])}
        agent = ctl.registry.by_id("peer")
        counters = (agent.done, agent.failed, agent.avg_job_s, ctl.health["stale"])
        attempts = {key: run.logs.attempts(key) for key in sorted(lease)}
        names = {run_id: "RUN"}  # each lease as its job and the how-manieth it is
        for e in ctl.events.buffer:
            if e.type == "job.started":
                names[e.data["lease"]] = f"{e.job}#{sum(n.startswith(e.job) for n in names.values()) + 1}"
        events = [(e.seq, e.type, names.get(e.run, e.run), e.job, e.agent,
                   {k: names.get(v, v) if isinstance(v, str) else v for k, v in e.data.items()})
                  for e in ctl.events.buffer]
    db = sqlite3.connect(tmp_path / "state" / JOURNAL_FILE)
    found = db.execute("SELECT key, state, lease, agent, result, cache_key, error, log, attempts, reused, "
                       "duration FROM jobs ORDER BY key")
    rows = [(key, state, names.get(lease_id), *rest) for key, state, lease_id, *rest in found]
    db.close()
    logs = sqlite3.connect(tmp_path / "state" / JOBLOGS_FILE)
    on_disk = attempts_of(logs, run_id)  # its rows and packs, in the order recorded
    logs.close()
    return {"events": events, "rows": rows, "attempts": attempts, "on_disk": on_disk, "counters": counters,
            "again": sorted(again)}


def test_a_mixed_message_settles_as_one_by_one(tmp_path, monkeypatch):
    installed_plugin(tmp_path / "site", "farm_batchmix_test", MIXED, "batchmix")
    grouped: list[list[str]] = []
    record_done = settling.record_done

    def recorded(group):
        grouped.append(list(group.keys))
        record_done(group)

    monkeypatch.setattr(settling, "record_done", recorded)
    batched = _settle_mixed(tmp_path / "batched")
    # the groups between the results that go one by one, in the message's order
    assert grouped == [["j00", "j01"], ["j03"], ["j06"], ["j08", "j10", "j11"]]
    monkeypatch.setattr(settling, "plain", lambda *args: False)  # every result by itself, as before
    single = _settle_mixed(tmp_path / "single")
    assert grouped == [["j00", "j01"], ["j03"], ["j06"], ["j08", "j10", "j11"]]  # none more

    assert not [e for e in batched["events"] + single["events"] if e[1] == "agent.left"]
    for part in ("events", "rows", "attempts", "on_disk", "counters", "again"):
        assert batched[part] == single[part], part
    # and what they agree on is what the message said
    done = [e for e in batched["events"] if e[1] == "job.done"]
    assert [(e[3], e[4], e[5]) for e in done] == [(k, "peer", {"reused": False})
                                                  for k in ("j00", "j01", "j03", "j06", "j08", "j10", "j11")]
    settled = [e[1:4] for e in batched["events"] if e[1] in ("job.done", "job.failed", "job.retried")]
    assert [(kind, job) for kind, _, job in settled] == [
        ("job.done", "j00"), ("job.done", "j01"), ("job.retried", "j02"), ("job.done", "j03"),
        ("job.retried", "j04"), ("job.retried", "j05"), ("job.done", "j06"), ("job.failed", "j07"),
        ("job.done", "j08"), ("job.done", "j10"), ("job.done", "j11")]
    rows = {row[0]: row for row in batched["rows"]}
    assert rows["j01"][1:5] == ("done", "j01#1", "peer", rows["j01"][4]) and rows["j01"][4] is not None
    assert rows["j07"][1] == "failed" and rows["j07"][6] == "bad scene"
    assert [a["state"] for a in batched["attempts"]["j05"]] == ["failed"]
    assert "j05's outputs do not add up" in batched["attempts"]["j05"][0]["error"]
    assert batched["attempts"]["j01"] == [{"attempt": 1, "agent": "peer", "state": "done", "error": None,
                                           "duration_s": 0.5, "log": "rendered j01\n"}]
    assert batched["counters"][:2] == (7, 3)  # done; failed: j02, j05's collate, j07
    assert batched["counters"][3] == 2


@pytest.mark.parametrize("per_run_bytes", [12_000, 400_000])  # the oldest evicted; compacted
def test_job_logs_kept_a_message_at_a_time_as_one_by_one(per_run_bytes):
    """`JobLogs.notes` keeps what `note` for each would, also past the run's bytes (the oldest go),
    the per-job bound and the compaction of the attempts let go, with long logs and jobs seen before."""
    import random

    from farm.controller.joblogs import JobLogs

    draw = random.Random(15)
    messages = [[(f"k{draw.randrange(60) if draw.random() < 0.6 else f'{m}-{i}'}", f"a{i % 3}", i / 3,
                  draw.choice([None, "", "x" * draw.randrange(1, 400), "y" * 1500]))
                 for i in range(draw.randrange(1, 40))] for m in range(400)]
    grouped, single = (JobLogs(per_job=1, log_bytes=1000, per_run_bytes=per_run_bytes) for _ in range(2))
    compacted = 0
    for entries in messages:
        queued = len(grouped._order)
        grouped.notes("done", entries)
        for key, agent, duration, log in entries:
            single.note(key, agent, "done", None, duration, log)
        assert (grouped.bytes, grouped.live, grouped.evicted) == (single.bytes, single.live, single.evicted)
        compacted += len(grouped._order) < queued + len(entries)
        assert list(grouped._order) == list(single._order)
    assert grouped.evicted > 0 if per_run_bytes < 100_000 else compacted > 0
    keys = {key for entries in messages for key, *_ in entries}
    assert {k: grouped.attempts(k) for k in keys} == {k: single.attempts(k) for k in keys}
