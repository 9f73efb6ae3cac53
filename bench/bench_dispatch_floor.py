"""The floor of farm's dispatch shape: what its hops and its journal cost with none of its bookkeeping.

    python bench/bench_dispatch_floor.py [--jobs 100000] [--rounds 3] [--json]

`bench_dispatch.py` compares farm with a bare ROUTER/DEALER loop that has one hop and no journal.
This asks what part of the gap the shape itself costs: the same no-op jobs, in turns, through

- ``bare``: the controller's ROUTER straight to 2 worker processes, jobs in messages of up to 256;
- ``journal``: the same, every done job upserted into an SQLite WAL table (farm's journal
  pragmas: ``synchronous=NORMAL``) by a writer thread, one transaction per results message;
- ``agent``: the same, each worker behind an agent process that reads each message's leases
  and forwards it (controller -> agent -> worker and back, as farm's agents do);
- ``agent+journal``: both: farm's shape, with none of its leases, logs, events or checks.

Medians of ``--rounds`` turns; ``--json`` prints one object {mode: jobs/s}. Measured, not tested:
a figure for docs/benchmarks.md, with `bench_dispatch.py`'s farm rate beside it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import zmq

WINDOW = 256  # jobs a worker may hold, as farm's default prefetch
#: mode: (each worker behind an agent, every done job journaled)
MODES = {"bare": (False, False), "journal": (False, True), "agent": (True, False),
         "agent+journal": (True, True)}


def worker(url: str) -> None:
    """Run each message's no-op jobs, answer with one results message."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(url)
    sock.send(msgpack.packb({"credit": WINDOW}))
    while (body := sock.recv()) != b"stop":
        sock.send(msgpack.packb([{"lease": j["lease"], "ok": True, "result": j["params"]["i"], "files": [],
                                  "duration": 0.0} for j in msgpack.unpackb(body)]))


def agent(url: str) -> None:
    """Forward jobs to a worker of its own and results back, reading each message's leases."""
    ctx = zmq.Context.instance()
    down = ctx.socket(zmq.DEALER)
    port = down.bind_to_random_port("tcp://127.0.0.1")
    child = multiprocessing.Process(target=worker, args=(f"tcp://127.0.0.1:{port}",))
    child.start()
    up = ctx.socket(zmq.DEALER)
    up.connect(url)
    up.send(down.recv())  # the worker's credit
    poller = zmq.Poller()
    poller.register(up, zmq.POLLIN)
    poller.register(down, zmq.POLLIN)
    held: set[str] = set()
    while True:
        for sock, _ in poller.poll():
            if sock is up:
                body = up.recv()
                if body == b"stop":
                    down.send(b"stop")
                    child.join()
                    return
                held.update(j["lease"] for j in msgpack.unpackb(body))
                down.send(body)
            else:
                body = down.recv()
                held.difference_update(r["lease"] for r in msgpack.unpackb(body))
                up.send(body)


def journal_writer(path: Path, rows: queue.SimpleQueue) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE jobs (run TEXT, key TEXT, state TEXT, attempts INT, duration REAL, agent TEXT, "
               "result BLOB, PRIMARY KEY (run, key))")
    while (batch := rows.get()) is not None:
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        db.execute("COMMIT")
    db.close()


def rate(jobs: int, with_agent: bool, with_journal: bool, folder: Path) -> float:
    """No-op jobs a second through 2 workers (each behind an agent if asked), journaled if asked."""
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    url = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    procs = [multiprocessing.Process(target=agent if with_agent else worker, args=(url,)) for _ in range(2)]
    for proc in procs:
        proc.start()
    credit: dict[bytes, int] = {}
    while len(credit) < 2:
        ident, raw = router.recv_multipart()
        credit[ident] = msgpack.unpackb(raw)["credit"]
    rows: queue.SimpleQueue = queue.SimpleQueue()
    writer = threading.Thread(target=journal_writer, args=(folder / "journal.sqlite", rows))
    writer.start()
    leases: dict[str, str] = {}
    sent = done = 0
    start = time.perf_counter()
    while done < jobs:
        for ident, free in credit.items():
            count = min(free, jobs - sent)
            if count >= 32 or (count and sent + count == jobs):  # refill in lumps, as farm's agents ask
                batch = [{"lease": f"l{i}", "key": f"job-{i:07d}", "project": "run", "params": {"i": i},
                          "deps": {}, "timeout": 0.0} for i in range(sent, sent + count)]
                leases.update((j["lease"], j["key"]) for j in batch)
                router.send_multipart([ident, msgpack.packb(batch)])
                sent += count
                credit[ident] = free - count
        ident, raw = router.recv_multipart()
        results = msgpack.unpackb(raw)
        keys = [leases.pop(r["lease"]) for r in results]
        if with_journal:
            rows.put([("run", key, "done", 1, r["duration"], "a", msgpack.packb(r["result"]))
                      for key, r in zip(keys, results, strict=True)])
        done += len(results)
        credit[ident] += len(results)
    elapsed = time.perf_counter() - start
    rows.put(None)
    writer.join()
    for ident in credit:
        router.send_multipart([ident, b"stop"])
    for proc in procs:
        proc.join()
    router.close(linger=0)
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):  # in turns, so a busy machine slows all alike
            for mode, (with_agent, with_journal) in MODES.items():
                folder = Path(tmp, f"{mode}-{i}")
                folder.mkdir()
                rates[mode].append(rate(args.jobs, with_agent, with_journal, folder))
    medians = {mode: round(statistics.median(r)) for mode, r in rates.items()}
    if args.json:
        print(json.dumps({"jobs": args.jobs, "rounds": args.rounds, "jobs_per_s": medians}))
        return
    for mode, value in medians.items():
        print(f"{mode:<14} {value:>9,} jobs/s  ({value / medians['bare']:.2f}x of bare)")


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    main()
