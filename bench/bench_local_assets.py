"""The embedded farm with a large asset: files used in place against copied into the cache.

    python bench/bench_local_assets.py [--mib 500] [--jobs 4] [--rounds 3] [--json]

A project of ``--jobs`` no-op synthetic jobs, with and without one ``--mib`` MiB file of random
bytes (generated here, in a temporary folder), on a fresh embedded-style farm each time (a
controller and 2 local agents over ``ipc://``, agents started and joined inside the timing, as
``farm submit DIR`` does). Three cases, in turns, ``--rounds`` times each, medians printed:

- ``none``: no large file (the floor);
- ``local``: the large file, agents with ``--local-assets`` (what ``farm submit`` runs now);
- ``copy``: the large file, agents without it: the synchroniser copies it into their cache.

Each case reports the seconds from start to the run's summary and how much the agents' cache
grew. The controller's hash cache is warmed first (one untimed run), as for any re-submit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, report, synthetic_project

from farm.client import submit
from farm.controller.server import Controller
from farm.embedded import private_socket_dir, start_local_agents, stop_agents
from farm.project import load_project

CASES = ("none", "local", "copy")


def tree_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def run_once(project: Path, state: Path, cache: Path, *, local: bool) -> tuple[float, int]:
    """Seconds for a fresh farm to render ``project``, and the bytes its agents' cache grew by."""
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["XDG_CACHE_HOME"] = str(cache)  # the agents inherit it
    sockets = private_socket_dir()
    start = time.perf_counter()
    ctl = Controller(f"ipc://{sockets}/jobs", state_dir=state)
    ctl.start()
    procs = start_local_agents(ctl.url, 2, local_assets=local)
    try:
        summary = submit(ctl.url, load_project(project))
        elapsed = time.perf_counter() - start
        assert summary.ok and summary.done == summary.total, summary
    finally:
        ctl.stop(shutdown_agents=True)
        stop_agents(procs)
        shutil.rmtree(sockets, ignore_errors=True)
    return elapsed, tree_bytes(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain = synthetic_project(Path(tmp, "plain"), args.jobs)
        big = synthetic_project(Path(tmp, "big"), args.jobs)
        with open(big / "big.bin", "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(2**20))
        project = {"none": plain, "local": big, "copy": big}
        seconds: dict[str, list[float]] = {c: [] for c in CASES}
        grown: dict[str, int] = {}
        for case in CASES:  # warm the controller's hash cache; untimed
            run_once(project[case], Path(tmp, f"state-{case}"), Path(tmp, "cache"), local=case != "copy")
        for _ in range(args.rounds):
            for case in CASES:
                s, g = run_once(
                    project[case], Path(tmp, f"state-{case}"), Path(tmp, "cache"), local=case != "copy"
                )
                seconds[case].append(s)
                grown[case] = g
    med = {c: statistics.median(v) for c, v in seconds.items()}
    if args.json:
        print(
            json.dumps(
                {
                    "mib": args.mib,
                    "jobs": args.jobs,
                    "rounds": args.rounds,
                    **{f"{c}_s": round(med[c], 3) for c in CASES},
                    **{f"{c}_cache_mib": round(grown[c] / 2**20, 1) for c in CASES},
                    "local_over_none_s": round(med["local"] - med["none"], 3),
                }
            )
        )
        return
    print(
        f"# local assets benchmark on {machine()}: {args.jobs} no-op jobs, 2 agents, medians of {args.rounds}"
    )
    report(
        f"{args.mib} MiB asset, in place",
        f"{med['local']:.2f} s, cache +{grown['local'] / 2**20:.1f} MiB",
        f"no asset {med['none']:.2f} s",
        ratio=med["none"] / med["local"],
        target="within ~1 s of no asset",
    )
    report(
        f"{args.mib} MiB asset, in place",
        f"{med['local']:.2f} s",
        f"copied {med['copy']:.2f} s, cache +{grown['copy'] / 2**20:.1f} MiB",
        ratio=med["copy"] / med["local"],
    )


if __name__ == "__main__":
    os.environ.setdefault("FARM_LOG_LEVEL", "warning")
    main()
