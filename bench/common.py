"""Shared bits for the benchmarks: what machine this is and one way to print a figure."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def report(what: str, figure: str, baseline: str, *, ratio: float, target: str = "") -> None:
    """One line: the figure, the same-run baseline, and figure/baseline as a speed ratio."""
    tail = f"  [target {target}]" if target else ""
    print(f"{what:<28} farm {figure:<40} baseline {baseline:<36} ratio {ratio:.2f}x{tail}", flush=True)


def synthetic_project(folder: Path, jobs: int, sleep: float = 0.0, name: str = "bench") -> Path:
    """A project of `jobs` synthetic jobs that each sleep `sleep` seconds (0: no-op)."""
    folder.mkdir(parents=True)
    (folder / "farm.toml").write_text(
        f'[project]\nname = "{name}"\nmedia_type = "synthetic"\n[synthetic]\njobs = {jobs}\nsleep = {sleep}\n')
    return folder


def wait_for_agents(url: str, count: int) -> None:
    from farm.client import Client

    with Client(url) as client:
        while len(client.status()["agents"]) < count:
            time.sleep(0.05)
