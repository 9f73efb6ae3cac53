"""Dispatch throughput and overhead: the embedded farm against multiprocessing.Pool.

    python bench/bench_dispatch.py [--jobs 50000] [--agents 2] [--before DIR --rounds 3]

1. no-op jobs through a real controller and 2 local agent processes vs
   multiprocessing.Pool(2).imap(chunksize=1) over the same count (target: >= 20,000 jobs/s);
2. 1,000 jobs of 10 ms on 2 agents: makespan vs the ideal (target: <= 3 % over).
Times are measured by the submitting client: submit to summary, collation included.
With ``--before DIR`` (a checkout of an earlier version), both versions run in turns, in
subprocesses, ``--rounds`` times each, and the median no-op rate of each is printed: a
before/after comparison in one run, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
    args = parser.parse_args()
    if args.before is not None:
        compare(args)
        return
    print(f"# dispatch benchmark on {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        ctl = Controller("tcp://127.0.0.1:0", state_dir=Path(tmp, "state"))
        ctl.start()
        procs = start_local_agents(ctl.url, args.agents)
        try:
            wait_for_agents(ctl.url, args.agents)
            farm_seconds(ctl.url, synthetic_project(Path(tmp, "warm"), 2000))  # workers started and warm
            farm_s = farm_seconds(ctl.url, synthetic_project(Path(tmp, "noop"), args.jobs))
            pool_s = pool_seconds(args.jobs, noop, int)
            report("no-op dispatch", f"{args.jobs / farm_s:,.0f} jobs/s", f"Pool(2) {args.jobs / pool_s:,.0f} jobs/s",
                   ratio=pool_s / farm_s, target=">= 20,000 jobs/s")

            ideal = 1000 * 0.010 / args.agents
            sleep_s = farm_seconds(ctl.url, synthetic_project(Path(tmp, "sleep"), 1000, 0.010))
            pool_sleep = pool_seconds(1000, sleeper, lambda i: 0.010)
            report("1,000 x 10 ms makespan", f"{sleep_s:.3f} s ({(sleep_s / ideal - 1) * 100:+.1f} % vs ideal "
                   f"{ideal:.1f} s)", f"Pool(2) {pool_sleep:.3f} s ({(pool_sleep / ideal - 1) * 100:+.1f} %)",
                   ratio=pool_sleep / sleep_s, target="<= 3 % over ideal")
        finally:
            ctl.stop(shutdown_agents=True)
            stop_agents(procs)


def compare(args: argparse.Namespace) -> None:
    """Run this benchmark for the version here and the one at --before, in turns; print medians."""
    here = Path(__file__).resolve().parents[1]
    rates: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for side, root in (("before", args.before.resolve()), ("after", here)):
            env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'plugins'}"}
            out = subprocess.run([sys.executable, str(root / "bench" / "bench_dispatch.py"), "--jobs", str(args.jobs),
                                  "--agents", str(args.agents)], env=env, capture_output=True, text=True, check=True)
            found = re.search(r"no-op dispatch\s+farm ([\d,]+) jobs/s", out.stdout)
            assert found, out.stdout + out.stderr
            rates[side].append(float(found.group(1).replace(",", "")))
            print(f"{side:<6} {rates[side][-1]:>9,.0f} jobs/s", flush=True)
    before, after = statistics.median(rates["before"]), statistics.median(rates["after"])
    report("no-op dispatch, median", f"{after:,.0f} jobs/s", f"before {before:,.0f} jobs/s", ratio=after / before)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    os.environ.setdefault("FARM_LOG_LEVEL", "warning")
    main()
