"""A dispatch turn's new jobs are leased a group at a time (`farm.controller.leasing`) and leave
exactly what leasing each by itself (`ProjectRun.lease`) leaves: the same JOBS messages with the
same jobs, the same events with the same fields in the same order (`run.started` first, a job
failed for good at its pull because its dependency failed coming between the `job.started` of the
jobs pulled before and after it), the same journal rows. The turns mix every case: plain jobs, one
whose dependency failed, one whose dependency is leased in the same turn (it waits), one whose
dependency is done, a job freed by a result (leased from the ready queue, by itself). A real
controller, a peer speaking the agent protocol on a real socket, real SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import wait_for
from control_helpers import installed_plugin, media_type_source
from peer_helpers import peer_run
from wire_helpers import job_map, result_row

from farm.controller import leasing
from farm.controller.server import JOURNAL_FILE
from farm.journal import Journal
from farm.protocol import T, pack, unpack

#: j05 waits for j01 (which fails for good first), j06 for j04 (leased in the same turn), j08 for j00
#: (done by then); no job cache (a run with one is leased one job at a time)
MIXED = media_type_source("leasemix", "[f'j{i:02d}' for i in range(12)]", """
        def cache_settings(self, settings):
            return None

        def split(self, project):
            deps = {"j05": ("j01",), "j06": ("j04",), "j08": ("j00",)}
            for i in range(12):
                yield Job(f"j{i:02d}", {"i": i}, deps=deps.get(f"j{i:02d}", ()))
""")
OK = {"ok": True, "result": None, "files": [], "duration": 0.01}


def _jobs(sock: zmq.Socket, count: int) -> list[dict[str, Any]]:
    """The next `count` jobs the peer is sent (JOBS messages, whole)."""
    jobs: list[dict[str, Any]] = []
    while len(jobs) < count:
        assert sock.poll(30_000), f"only {[j['key'] for j in jobs]} came"
        msg = unpack(sock.recv_multipart())
        if msg.type is T.JOBS:
            jobs += map(job_map, msg.body["jobs"])
    assert len(jobs) == count, [j["key"] for j in jobs]
    return jobs


def _lease_mixed(tmp_path: Path) -> dict[str, Any]:
    """Run the mixed project through a fresh controller and a peer of 4 slots; what it left, lease
    ids and the run id named by their job and the run (they are random)."""
    with peer_run(tmp_path, "leasemix", "mixed", 4) as (ctl, sock, run_id):
        run = ctl.runs[run_id]
        turns = [_jobs(sock, 4)]  # j00..j03
        lease = {job["key"]: job["lease"] for job in turns[-1]}
        sock.send_multipart(pack(T.RESULTS, {"results": [result_row(r) for r in [
            {**OK, "lease": lease["j00"]},
            {"lease": lease["j01"], "ok": False, "result": None, "files": [], "error": "bad", "duration": 0.0,
             "retry": False},
            {**OK, "lease": lease["j02"]}, {**OK, "lease": lease["j03"]}]]}))
        turns.append(_jobs(sock, 4))  # j04, j07, j08, j09 (j05 failed at its pull, j06 waits)
        sock.send_multipart(pack(T.RESULTS, {"results": [result_row({**OK, "lease": j["lease"]})
                                                         for j in turns[-1]]}))
        turns.append(_jobs(sock, 3))  # j06 (freed), j10, j11
        sock.send_multipart(pack(T.RESULTS, {"results": [result_row({**OK, "lease": j["lease"]})
                                                         for j in turns[-1]]}))
        wait_for(lambda: run.state in ("done", "failed"), what="the run's end")
        names = {run_id: "RUN"}  # each lease as its job (each job is leased once here)
        for turn in turns:
            names.update({job["lease"]: job["key"] + "#" for job in turn})
        sent = [[(job["key"], names[job["lease"]], job["params"], job["deps"]) for job in turn]
                for turn in turns]
        events = [(e.seq, e.type, names.get(e.run, e.run), e.job, e.agent,
                   {k: names.get(v, v) if isinstance(v, str) else v for k, v in e.data.items()
                    if e.type != "run.finished" or k in ("state", "done", "failed", "total", "failures")})
                  for e in ctl.events.buffer if e.type != "progress"]  # (a summary's times and paths differ)
        first = run.first_dispatch_s is not None
    db = sqlite3.connect(tmp_path / "state" / JOURNAL_FILE)
    found = db.execute("SELECT key, state, lease, agent, result, cache_key, error, log, attempts, reused, "
                       "duration FROM jobs ORDER BY key")
    rows = [(key, state, names.get(lease_id), *rest) for key, state, lease_id, *rest in found]
    db.close()
    return {"sent": sent, "events": events, "rows": rows, "first": first}


def test_a_turns_new_jobs_lease_as_one_by_one(tmp_path, monkeypatch):
    installed_plugin(tmp_path / "site", "farm_leasemix_test", MIXED, "leasemix")
    groups: list[list[str]] = []
    record = leasing.Starting.record

    def recorded(starting):
        fresh = [lease.job.key for lease in starting.leases[starting.recorded:]]
        if fresh:
            groups.append(fresh)
        record(starting)

    monkeypatch.setattr(leasing.Starting, "record", recorded)
    grouped = _lease_mixed(tmp_path / "grouped")
    # recorded before each job with dependencies is pulled, and at the end of each turn
    assert groups == [["j00", "j01", "j02", "j03"], ["j04"], ["j07"], ["j08", "j09"], ["j10", "j11"]]
    monkeypatch.setattr(leasing, "groupable", lambda run: False)  # every lease by itself, as before
    single = _lease_mixed(tmp_path / "single")
    assert len(groups) == 5  # none more

    for part in ("sent", "events", "rows", "first"):
        assert grouped[part] == single[part], part
    # and what they agree on is what happened
    assert [[key for key, *_ in turn] for turn in grouped["sent"]] == [
        ["j00", "j01", "j02", "j03"], ["j04", "j07", "j08", "j09"], ["j06", "j10", "j11"]]
    kinds = [(e[1], e[3]) for e in grouped["events"] if e[1] in ("run.started", "job.started", "job.failed")]
    assert kinds[:10] == [("run.started", None), ("job.started", "j00"), ("job.started", "j01"),
                          ("job.started", "j02"), ("job.started", "j03"), ("job.failed", "j01"),
                          ("job.started", "j04"), ("job.failed", "j05"), ("job.started", "j07"),
                          ("job.started", "j08")]
    started = [e[5] for e in grouped["events"] if e[1] == "job.started"]
    assert started[:2] == [{"lease": "j00#"}, {"lease": "j01#"}]
    assert ("j05", "failed") in [(row[0], row[1]) for row in grouped["rows"]]


def _state(journal: Journal) -> tuple:
    """What a journal holds: its batch (rows but their times), what waits for the next commit, and
    the committed rows (read beside it)."""
    journal._wait_writer()  # the writer thread's commit, if one is under way
    db = sqlite3.connect(journal.path)
    committed = db.execute("SELECT project_id, key, state, lease, agent, attempts FROM jobs "
                           "ORDER BY key").fetchall()
    db.close()
    batch = sorted((job, row[:10]) for job, row in journal._pending.items())
    return batch, list(journal._young), journal.unflushed, committed


@pytest.mark.parametrize("background", [False, True])
def test_running_rows_journaled_together_as_one_by_one(tmp_path, background):
    """`Journal.jobs_started` leaves the rows, the held running rows and the commits (a batch that
    fills on the way) that `job_started` for each leaves, after every step."""
    journals = [Journal(tmp_path / f"{name}.db", max_batch=7, background=background) for name in ("g", "s")]
    try:
        for turn in range(6):
            started = [(f"k{turn}-{i:02d}", f"L{turn}.{i}") for i in range(turn * 3 + 1)]
            journals[0].jobs_started("p", [key for key, _ in started], [lease for _, lease in started],
                                     f"a{turn % 2}")
            for key, lease in started:
                journals[1].job_started("p", key, lease, f"a{turn % 2}")
            assert _state(journals[0]) == _state(journals[1])
            done = [(key, turn) for key, _ in started[::2]]
            for journal in journals:
                journal.jobs_done("p", [key for key, _ in done], [result for _, result in done])
                journal.tick(float("inf"))
            assert _state(journals[0]) == _state(journals[1])
        for journal in journals:
            journal.flush()
        assert _state(journals[0]) == _state(journals[1])
    finally:
        for journal in journals:
            journal.close()
