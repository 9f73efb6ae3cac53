"""Run every benchmark in turn and print their figures (each with its same-run baseline).

    python3 bench/run_all.py [--quick]

--quick uses smaller sizes (a few minutes in all) for a smoke check; the figures in
docs/benchmarks.md come from the full sizes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = [
    ["bench_dispatch.py"],
    ["bench_agents.py"],
    ["bench_agents.py", "--curve"],
    ["bench_scale.py"],
    ["bench_journal.py"],
    ["bench_tiles.py", "--zoom", "0-6"],
    ["bench_filesync.py"],
    ["bench_local_assets.py"],
    ["bench_frames.py"],
    ["bench_audio.py"],
]
QUICK = [
    ["bench_dispatch.py", "--jobs", "20000", "--rounds", "1"],
    ["bench_agents.py", "--sizes", "100,500", "--jobs", "5000"],
    ["bench_scale.py", "--jobs", "50000"],
    ["bench_journal.py", "--jobs", "20000", "--repeat", "1"],
    ["bench_tiles.py", "--zoom", "0-4", "--no-breakdown"],
    ["bench_filesync.py", "--size-mb", "128"],
    ["bench_local_assets.py", "--mib", "100", "--rounds", "1"],
    ["bench_frames.py", "--chunks", "6"],
    ["bench_audio.py", "--minutes", "3"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    failed = []
    for cmd in QUICK if args.quick else FULL:
        print(f"\n$ python3 bench/{' '.join(cmd)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]]).returncode:
            failed.append(cmd[0])
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
