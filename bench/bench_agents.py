"""Many agents on one controller: light simulated agents on loopback against a real Controller.

    python bench/bench_agents.py [--sizes 100,500,1000,2000] [--jobs 20000] [--curve] [--json]

Each size runs a fresh controller in a process of its own (so its CPU and memory are its own)
and ``--procs`` simulator processes holding the agents: one DEALER socket per agent, the real
protocol of `farm.protocol` (HELLO, heartbeats, JOBS answered at once with RESULTS, ERROR
answered with a fresh HELLO), CURVE on with ``--curve``. Per size it reports:

- ``jobs_per_s``: ``--jobs`` no-op synthetic jobs submitted by a client, submit to summary;
- ``false_deaths``: agents the controller forgot while they were alive (it answered them ERROR);
- ``hb_gap_p99_s``: over the agents, the p99 of the longest silence each saw from the controller
  (the controller heartbeats every 1 s when idle; an agent gives up after 5 s);
- ``controller_cpu_pct_per_agent``: controller CPU in an idle 3 s window, per agent;
- ``controller_cpu_us_per_job``: controller CPU (all its threads) over the run, per job: the
  figure a loaded machine changes least (jobs/s falls with the CPU others take);
- ``controller_rss_mb`` and ``rss_kb_per_agent`` (over the controller before agents joined);
- ``status_ms``: median time for a client's ``farm status`` round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zmq
from common import machine, synthetic_project

from farm import __version__
from farm.client import Client, submit
from farm.controller.server import Controller
from farm.keys import KeyStore
from farm.project import load_project
from farm.protocol import JobResult, T, pack, unpack
from farm.security import ClientSecurity, ServerSecurity

HEARTBEAT_S = 1.0


def run_controller(keys: str | None, state: str, urls: Any, stop: Any) -> None:
    logging.getLogger("farm").setLevel(logging.ERROR)  # agents leaving at the end are no news
    security = ServerSecurity(keys) if keys else None
    ctl = Controller("tcp://127.0.0.1:0", state_dir=Path(state), security=security)
    ctl.start()
    urls.put(ctl.url)
    stop.wait()
    ctl.stop(shutdown_agents=True)
    if security:
        security.stop()


def simulate(url: str, names: list[str], keys: str | None, stop: Any, out: Any) -> None:
    """Agents ``names``, one DEALER each, until ``stop``; puts their counts on ``out``."""
    ctx = zmq.Context()
    setup = ClientSecurity(keys, "agent", "controller").socket_setup if keys else None
    socks: dict[zmq.Socket, str] = {}
    poller = zmq.Poller()
    now = time.monotonic()
    last_recv: dict[zmq.Socket, float] = {}
    last_sent: dict[zmq.Socket, float] = {}
    max_gap: dict[zmq.Socket, float] = {}
    errors = jobs = 0
    introducing: set[zmq.Socket] = set()  # said HELLO again, no WELCOME yet

    def hello(sock: zmq.Socket) -> None:
        sock.send_multipart(
            pack(
                T.HELLO,
                {
                    "agent": socks[sock],
                    "host": "sim",
                    "pid": os.getpid(),
                    "slots": 1,
                    "prefetch": 16,
                    "caps": ["synthetic"],
                    "held": [],
                    "version": __version__,
                    "session": socks[sock],
                },
            )
        )
        last_sent[sock] = time.monotonic()

    for name in names:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        if setup:
            setup(sock)
        sock.connect(url)
        socks[sock] = name
        poller.register(sock, zmq.POLLIN)
        hello(sock)
    while not stop.is_set():
        for sock, _ in poller.poll(100):
            while True:
                try:
                    msg = unpack(sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
                now = time.monotonic()
                if sock in last_recv:
                    max_gap[sock] = max(max_gap.get(sock, 0.0), now - last_recv[sock])
                last_recv[sock] = now
                if msg.type is T.JOBS:
                    results = [JobResult(j[0], True).to_wire() for j in msg.body["jobs"]]
                    jobs += len(results)
                    sock.send_multipart(pack(T.RESULTS, {"results": results}))
                    last_sent[sock] = now
                elif msg.type is T.WELCOME:
                    introducing.discard(sock)
                elif msg.type is T.ERROR and sock not in introducing:  # it forgot us: a false death
                    errors += 1  # (one HELLO per loss, as an agent does: later ERRORs were in flight)
                    introducing.add(sock)
                    hello(sock)
        now = time.monotonic()
        for sock, sent in last_sent.items():
            if now - sent >= HEARTBEAT_S:
                sock.send_multipart(pack(T.HEARTBEAT))
                last_sent[sock] = now
    out.put({"errors": errors, "jobs": jobs, "gaps": list(max_gap.values())})
    for sock in socks:
        sock.close(linger=0)
    ctx.term()


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return cpu, rss / 1024


def one_size(agents: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    keys = None
    setup = None
    if args.curve:
        store = KeyStore(tmp / "keys")
        if not (tmp / "keys" / "controller.key").exists() and not store.allowed():
            for name in ("controller", "agent", "client"):
                store.create(name)
            store.allow("agent")
            store.allow("client")
        keys = str(store.root)
        setup = ClientSecurity(keys, "client", "controller").socket_setup
    mp = multiprocessing.get_context("fork")
    urls, out, stop_ctl, stop_sim = mp.Queue(), mp.Queue(), mp.Event(), mp.Event()
    ctl = mp.Process(target=run_controller, args=(keys, str(tmp / f"state-{agents}"), urls, stop_ctl))
    ctl.start()
    url = urls.get(timeout=60)
    _, rss0 = proc_stat(ctl.pid)
    per = -(-agents // args.procs)
    sims = [
        mp.Process(
            target=simulate,
            args=(
                url,
                [f"sim-{agents}-{i}" for i in range(p * per, min(agents, (p + 1) * per))],
                keys,
                stop_sim,
                out,
            ),
        )
        for p in range(args.procs)
    ]
    for sim in sims:
        sim.start()
    try:
        with Client(url, socket_setup=setup) as client:
            started = time.monotonic()
            while len(client.status()["agents"]) < agents:
                if time.monotonic() - started > 300:
                    raise SystemExit(
                        f"only {len(client.status()['agents'])} of {agents} agents joined in 300 s"
                    )
                time.sleep(0.2)
            join_s = time.monotonic() - started
            times = []
            for _ in range(5):
                t = time.perf_counter()
                client.status()
                times.append(time.perf_counter() - t)
        cpu0, _ = proc_stat(ctl.pid)
        time.sleep(3.0)
        cpu1, rss1 = proc_stat(ctl.pid)
        project = load_project(synthetic_project(tmp / f"p-{agents}", args.jobs))
        t = time.perf_counter()
        summary = submit(url, project, socket_setup=setup)
        elapsed = time.perf_counter() - t
        cpu2, _ = proc_stat(ctl.pid)  # its CPU over the run: per job, what load on the machine does not hide
        if not summary.ok:
            print(f"{agents} agents: the run {summary.state}: {summary.failed} jobs failed, first: "
                  f"{summary.failures[:1]}", file=sys.stderr)
    finally:  # never left waiting on a process that died or hangs
        stop_sim.set()
        counts = []
        for _ in sims:
            with contextlib.suppress(queue.Empty):
                counts.append(out.get(timeout=60))
        stop_ctl.set()
        for proc in (*sims, ctl):
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    gaps = sorted(g for c in counts for g in c["gaps"])
    return {
        "agents": agents,
        "curve": bool(args.curve),
        "jobs": args.jobs,
        "jobs_per_s": round(args.jobs / elapsed),
        "jobs_failed": summary.failed,
        "false_deaths": sum(c["errors"] for c in counts),
        "hb_gap_p99_s": round(gaps[int(0.99 * (len(gaps) - 1))], 3) if gaps else None,
        "controller_cpu_pct_per_agent": round((cpu1 - cpu0) / 3.0 / agents * 100, 4),
        "controller_cpu_us_per_job": round((cpu2 - cpu1) / args.jobs * 1e6, 1),
        "controller_rss_mb": round(rss1, 1),
        "rss_kb_per_agent": round((rss1 - rss0) * 1024 / agents, 1),
        "status_ms": round(statistics.median(times) * 1000, 1),
        "join_s": round(join_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000,2000", help="agent counts, comma separated")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--procs", type=int, default=2, help="simulator processes")
    parser.add_argument("--curve", action="store_true", help="CURVE on the controller's sockets")
    parser.add_argument("--json", action="store_true", help="print one JSON object per size")
    args = parser.parse_args()
    if not args.json:
        curve = "on" if args.curve else "off"
        print(f"# agents benchmark on {machine()}, CURVE {curve}, {args.jobs} no-op jobs")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            row = one_size(size, args, Path(tmp))
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(
                    f"{size:>5} agents: {row['jobs_per_s']:>7,} jobs/s, {row['false_deaths']} false deaths, "
                    f"heartbeat gap p99 {row['hb_gap_p99_s']} s, "
                    f"controller {row['controller_cpu_pct_per_agent']:.4f} % CPU and "
                    f"{row['rss_kb_per_agent']:.0f} KiB per agent ({row['controller_rss_mb']} MiB), "
                    f"status {row['status_ms']} ms, joined in {row['join_s']} s, "
                    f"controller {row['controller_cpu_us_per_job']} us CPU per job",
                    flush=True,
                )


if __name__ == "__main__":
    os.environ.setdefault("FARM_LOG_LEVEL", "warning")
    main()
