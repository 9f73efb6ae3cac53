"""Dispatch throughput and overhead: the embedded farm against a bare ZeroMQ loop and multiprocessing.Pool.

    python bench/bench_dispatch.py [--jobs 50000] [--agents 2] [--rounds 3] [--json] [--before DIR]
                                   [--prefetch N] [--http]

1. no-op jobs through a real controller (journal on) and 2 local agent processes vs a bare
   pyzmq ROUTER/DEALER credit loop with msgpack and 2 worker processes (`bare_seconds`: no
   journal, no leases, no checks: the floor any farm on these sockets pays), in turns,
   ``--rounds`` times each, medians printed, and farm's ratio to it (goal: >= 0.5x);
   also multiprocessing.Pool(2).imap(chunksize=1) over the same count;
2. 1,000 jobs of 10 ms on 2 agents: makespan vs the ideal (target: <= 3 % over).
``--json`` prints one object: farm_jobs_per_s, bare_jobs_per_s, ratio (and the rest: CPU per job
by part, ``loop_wall_pct``: where the controller's loop thread spent the last farm round, on a CPU,
waiting for one, or asleep (its poll, the GIL), ``gc_s``: the cyclic garbage collector's seconds in
the farm rounds, by generation).
Times are measured by the submitting client: submit to summary, collation included.
With ``--before DIR`` (a checkout of an earlier version), both versions run in turns, in
subprocesses, ``--rounds`` times each, and the median no-op rate of each is printed: a
before/after comparison in one run, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import msgpack
import zmq
from common import machine, report, synthetic_project, wait_for_agents

from farm.client import submit
from farm.controller.server import Controller
from farm.embedded import start_local_agents, stop_agents
from farm.project import load_project


def noop(i: int) -> int:
    return i


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def pool_seconds(jobs: int, fn, arg) -> float:
    with multiprocessing.Pool(2) as pool:
        list(pool.imap(noop, range(100), chunksize=1))  # warm up
        start = time.perf_counter()
        list(pool.imap(fn, [arg(i) for i in range(jobs)], chunksize=1))
        return time.perf_counter() - start


def cpu_s(path: str) -> float:
    """CPU seconds (user + system) from a /proc .../stat file; 0 if it is gone."""
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def cpu_by_part(agents: list[int]) -> dict[str, float]:
    """CPU seconds so far of the controller's loop thread, its journal writer, its event thread,
    its job-log writer, the rest of this process (the client, ZeroMQ's I/O thread, the controller's
    other threads), the agent processes and their workers."""

    threads = {t.name: t.native_id for t in threading.enumerate()}
    me = os.getpid()
    part = {name: cpu_s(f"/proc/{me}/task/{tid}/stat") for name, tid in threads.items()}
    controller = part.get("farm-controller", 0.0)
    journal = sum(v for k, v in part.items() if k.startswith("farm-journal"))
    events = part.get("farm-events", 0.0)
    joblogs = part.get("farm-joblogs", 0.0)
    return {"controller": controller, "journal": journal, "events": events, "joblogs": joblogs,
            "client": cpu_s(f"/proc/{me}/stat") - controller - journal - events - joblogs,
            "agent": sum(cpu_s(f"/proc/{a}/stat") for a in agents),
            "worker": sum(cpu_s(f"/proc/{w}/stat") for a in agents for w in children(a))}


def loop_clock() -> tuple[float, float]:
    """The controller's loop thread so far: seconds on a CPU and seconds runnable but waiting for one
    (`/proc/.../schedstat`); (0, 0) if unreadable."""
    tid = next((t.native_id for t in threading.enumerate() if t.name == "farm-controller"), None)
    try:
        with open(f"/proc/{os.getpid()}/task/{tid}/schedstat") as f:
            on_cpu, runqueue = f.read().split()[:2]
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(on_cpu) / 1e9, int(runqueue) / 1e9


def loop_waits(before: tuple[float, float], after: tuple[float, float], wall: float) -> dict[str, float]:
    """Where the loop thread's wall time of a round went, in %: on a CPU, waiting for a CPU, and
    asleep (in its poll for messages, or for the GIL while another thread of the process holds it)."""
    on_cpu, runqueue = after[0] - before[0], after[1] - before[1]
    return {"on_cpu": round(on_cpu / wall * 100, 1), "runqueue": round(runqueue / wall * 100, 1),
            "asleep": round((wall - on_cpu - runqueue) / wall * 100, 1)}


class GcTimer:
    """Seconds Python's cyclic garbage collector took in this process while `on`, by generation."""

    def __init__(self) -> None:
        self.on = False
        self.seconds = [0.0, 0.0, 0.0]
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self.on:
            self.seconds[info["generation"]] += time.perf_counter() - self._start


BARE_CREDIT = 256  # jobs a bare worker may hold, like an agent's prefetch


def bare_worker(url: str) -> None:
    """A DEALER that asks for credit, runs each job (a no-op) and returns one result per job."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(url)
    sock.send(msgpack.packb({"type": "ready", "credit": BARE_CREDIT}))
    while True:
        job = msgpack.unpackb(sock.recv())
        if job["type"] == "stop":
            return
        reply = {"type": "result", "lease": job["lease"], "ok": True, "result": noop(job["i"])}
        sock.send(msgpack.packb(reply))


def bare_seconds(jobs: int, workers: int = 2) -> float:
    """Seconds for a bare ROUTER/DEALER credit loop to run ``jobs`` no-op jobs on ``workers`` processes."""
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    url = f"tcp://127.0.0.1:{port}"
    procs = [multiprocessing.Process(target=bare_worker, args=(url,)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    credit: dict[bytes, int] = {}
    while len(credit) < workers:  # all connected before the clock starts
        ident, raw = router.recv_multipart()
        credit[ident] = msgpack.unpackb(raw)["credit"]
    start = time.perf_counter()
    sent = done = 0
    while done < jobs:
        for ident, free in credit.items():
            while free and sent < jobs:
                router.send_multipart([ident, msgpack.packb({"type": "job", "lease": f"l{sent}", "i": sent,
                                                             "params": {"i": sent}})])
                sent += 1
                free -= 1
            credit[ident] = free
        ident, raw = router.recv_multipart()
        while True:
            msg = msgpack.unpackb(raw)
            assert msg["ok"]
            done += 1
            credit[ident] += 1
            try:
                ident, raw = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
    elapsed = time.perf_counter() - start
    for ident in credit:
        router.send_multipart([ident, msgpack.packb({"type": "stop"})])
    for proc in procs:
        proc.join()
    router.close(linger=0)
    return elapsed


def farm_seconds(url: str, folder: Path) -> float:
    proj = load_project(folder)
    start = time.perf_counter()
    summary = submit(url, proj)
    elapsed = time.perf_counter() - start
    assert summary.ok and summary.done == summary.total, summary
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--before", type=Path, help="a checkout of the version to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--prefetch", type=int, help="the agents' --prefetch (default: the agent's own)")
    parser.add_argument("--http", action="store_true",
                        help="serve the HTTP API beside the controller (its metrics observe every event)")
    args = parser.parse_args()
    if args.before is not None:
        compare(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        http = None
        if args.http:
            from farm.http.server import HttpServer

            http = HttpServer("127.0.0.1", 0)
        ctl = Controller("tcp://127.0.0.1:0", state_dir=Path(tmp, "state"), http=http)
        ctl.start()
        extra = ["--prefetch", str(args.prefetch)] if args.prefetch is not None else None
        procs = start_local_agents(ctl.url, args.agents, extra=extra)
        try:
            wait_for_agents(ctl.url, args.agents)
            farm_seconds(ctl.url, synthetic_project(Path(tmp, "warm"), 2000))  # workers started and warm
            bare_seconds(2000, args.agents)
            farm_s, bare_s = [], []
            pids = [p.pid for p in procs]
            collector = GcTimer()  # in the farm rounds: the controller's threads and the client's
            for i in range(args.rounds):  # in turns, so a busy machine slows both alike
                before, clock = cpu_by_part(pids), loop_clock()
                collector.on = True
                farm_s.append(farm_seconds(ctl.url, synthetic_project(Path(tmp, f"noop{i}"), args.jobs)))
                collector.on = False
                after, waits = cpu_by_part(pids), loop_waits(clock, loop_clock(), farm_s[-1])
                bare_s.append(bare_seconds(args.jobs, args.agents))
            # the last round's
            us_per_job = {k: round((after[k] - before[k]) / args.jobs * 1e6, 1) for k in after}
            farm_rate = args.jobs / statistics.median(farm_s)
            bare_rate = args.jobs / statistics.median(bare_s)
            pool_s = pool_seconds(args.jobs, noop, int)
            ideal = 1000 * 0.010 / args.agents
            sleep_s = farm_seconds(ctl.url, synthetic_project(Path(tmp, "sleep"), 1000, 0.010))
            pool_sleep = pool_seconds(1000, sleeper, lambda i: 0.010)
        finally:
            ctl.stop(shutdown_agents=True)
            stop_agents(procs)
    if args.json:
        print(json.dumps({"jobs": args.jobs, "agents": args.agents, "rounds": args.rounds,
                          "farm_jobs_per_s": round(farm_rate), "bare_jobs_per_s": round(bare_rate),
                          "ratio": round(farm_rate / bare_rate, 3),
                          "pool_jobs_per_s": round(args.jobs / pool_s), "sleep_makespan_s": round(sleep_s, 3),
                          "sleep_ideal_s": ideal, "cpu_us_per_job": us_per_job, "loop_wall_pct": waits,
                          "gc_s": [round(v, 3) for v in collector.seconds]}))
        return
    print(f"# dispatch benchmark on {machine()}, medians of {args.rounds}")
    report("no-op dispatch vs bare loop", f"{farm_rate:,.0f} jobs/s", f"bare ZeroMQ {bare_rate:,.0f} jobs/s",
           ratio=farm_rate / bare_rate, target=">= 0.5x")
    print("  CPU per no-op job (last round, us): " + ", ".join(f"{k} {v}" for k, v in us_per_job.items()))
    print("  the controller's loop thread (last round, % of its wall time): "
          + ", ".join(f"{k} {v}" for k, v in waits.items()))
    print("  cyclic GC in the farm rounds (controller process, s, generations 0/1/2): "
          + " / ".join(f"{v:.3f}" for v in collector.seconds))
    report("no-op dispatch vs Pool", f"{farm_rate:,.0f} jobs/s", f"Pool(2) {args.jobs / pool_s:,.0f} jobs/s",
           ratio=pool_s * farm_rate / args.jobs, target=">= 20,000 jobs/s")
    report("1,000 x 10 ms makespan", f"{sleep_s:.3f} s ({(sleep_s / ideal - 1) * 100:+.1f} % vs ideal "
           f"{ideal:.1f} s)", f"Pool(2) {pool_sleep:.3f} s ({(pool_sleep / ideal - 1) * 100:+.1f} %)",
           ratio=pool_sleep / sleep_s, target="<= 3 % over ideal")


def compare(args: argparse.Namespace) -> None:
    """Run this benchmark for the version here and the one at --before, in turns; print medians."""
    here = Path(__file__).resolve().parents[1]
    rates: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for side, root in (("before", args.before.resolve()), ("after", here)):
            env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'plugins'}"}
            out = subprocess.run([sys.executable, str(root / "bench" / "bench_dispatch.py"), "--jobs", str(args.jobs),
                                  "--agents", str(args.agents)], env=env, capture_output=True, text=True, check=True)
            found = re.search(r"no-op dispatch\S*.*?farm ([\d,]+) jobs/s", out.stdout)
            assert found, out.stdout + out.stderr
            rates[side].append(float(found.group(1).replace(",", "")))
            print(f"{side:<6} {rates[side][-1]:>9,.0f} jobs/s", flush=True)
    before, after = statistics.median(rates["before"]), statistics.median(rates["after"])
    report("no-op dispatch, median", f"{after:,.0f} jobs/s", f"before {before:,.0f} jobs/s", ratio=after / before)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    os.environ.setdefault("FARM_LOG_LEVEL", "warning")
    main()
