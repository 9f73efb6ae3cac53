"""Benchmark the embedded farm's start-up: `farm submit` of one no-op job, against a bare
Python and a bare Blender started in the same run.

    python bench/bench_startup.py [--agents 2] [--repeat 5] [--farm-path DIR] [--json]
    python bench/bench_startup.py --timeline PROJECT [--agents 2]

Each round alternates: ``python3 -c pass``, ``blender -b --version`` (the baselines), then
``python3 -m farm submit --json`` of a fresh synthetic project with one no-op job, as a user
types it (the CLI's own start-up included). Measured from just before starting the command:

- ``first_job_s``: until the job was done (its ``updated_at`` in the run's journal; a no-op
  job is done the moment it reaches a worker);
- ``summary_s``: until it printed its summary;
- ``exit_s``: until it exited (the agents stopped, the controller's state closed);
- ``cpu_s``: the CPU time of all its processes (submitter, agents, workers): steadier than
  the times above on a machine others load.

Medians over ``--repeat`` rounds. ``--farm-path DIR`` runs the farm of another checkout
(``DIR`` and ``DIR/plugins`` lead PYTHONPATH): the same bench measures before and after.
With ``--json`` one JSON object (``name``, ``farm_s`` = summary_s, ``baseline_s`` = the bare
Blender, ``speedup``, the rest below). Asserts nothing.

``--timeline PROJECT`` runs ``farm submit`` once on a copy of ``PROJECT`` with ``$FARM_TRACE``
set (`farm.trace`) and ``--log-level info``, and prints when each step happened, from the
submitter's start: the marks of every process (submitter, agents, workers, Blender's start
and scene load, finalize), the controller's log of agents joining, and for a frames project
the first and last frame Blender saved (its ``Saved:`` lines).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def env_for(farm_path: Path, **extra: str) -> dict[str, str]:
    """Our environment with ``farm_path`` (and its plugins) first on PYTHONPATH; commands run with
    ``python -P``, so the current folder (a checkout too, maybe) does not come before it."""
    paths = [str(farm_path), str(farm_path / "plugins")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]), **extra}


def timed(cmd: list[str], **kw: Any) -> float:
    started = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.time() - started


def noop_project(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "farm.toml").write_text('[project]\nname = "startup"\nmedia_type = "synthetic"\n'
                                      "[synthetic]\njobs = 1\nsleep = 0\n")
    return folder


def farm_once(folder: Path, agents: int, env: dict[str, str]) -> tuple[float, float, float, float]:
    """(submit -> first job done, -> summary printed, -> exit, CPU seconds of all its processes)
    of one `farm submit`: the agents and workers it waited for count in its CPU time."""
    project = noop_project(folder)
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-P", "-m", "farm", "submit", "--json", "-n", str(agents),
                             str(project)], stdout=subprocess.PIPE, text=True, env=env, cwd=folder.parent)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # --json: the summary is the one line
    printed = time.time()
    proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"farm submit exited with {proc.returncode}")
    ended = time.time()
    summary = json.loads(line)
    if summary["state"] != "done":
        raise SystemExit(f"the run failed: {summary}")
    with sqlite3.connect(project / ".farm" / "journal.sqlite") as db:
        (done_at,) = db.execute("SELECT min(updated_at) FROM jobs WHERE state = 'done'").fetchone()
    return done_at - started, printed - started, ended - started, usage.ru_utime + usage.ru_stime


def bench(args: argparse.Namespace) -> dict[str, Any]:
    env = env_for(args.farm_path)
    blender = shutil.which(os.environ.get("FARM_BLENDER", "blender"))
    rows: dict[str, list[float]] = {"python_s": [], "blender_s": [], "first_job_s": [], "summary_s": [],
                                    "exit_s": [], "cpu_s": []}
    before = load()
    with tempfile.TemporaryDirectory(prefix="farm-bench-startup-") as tmp:
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        for _ in range(args.repeat):
            rows["python_s"].append(timed([sys.executable, "-P", "-c", "pass"]))
            if blender:
                rows["blender_s"].append(timed([blender, "-b", "--version"]))
            first, summary, ended, cpu = farm_once(Path(tmp) / "project", args.agents, env)
            rows["cpu_s"].append(cpu)
            rows["first_job_s"].append(first)
            rows["summary_s"].append(summary)
            rows["exit_s"].append(ended)
    med = {k: round(statistics.median(v), 3) if v else None for k, v in rows.items()}
    baseline = med["blender_s"] or med["python_s"]
    return {"name": "startup-noop", "farm": str(args.farm_path), "agents": args.agents, "repeat": args.repeat,
            **med, "farm_s": med["summary_s"], "baseline_s": baseline,
            "speedup": round(baseline / med["summary_s"], 3), "load_before": before, "load_after": load()}


#: one fixed cost each, as a Python one-liner that runs the same on either checkout
COSTS = {
    "python": "pass",
    "agent command's imports": "import farm.cli.agent",
    "submit command's imports": "import farm.cli.submit",
    "worker's imports and its frames plugin": "import farm.agent.worker; import farm.plugins as p; "
                                              "p.get_media_type('frames')",
    "agent's renderer checks (all it offers)": "from farm.agent.capabilities import detect; detect([])",
    "agent's renderer checks, frames only": "import os; os.environ['FARM_MEDIA_TYPES'] = 'frames'; "
                                            "from farm.agent.capabilities import detect; detect([])",
}


def cpu_timed(cmd: list[str], **kw: Any) -> float:
    """CPU seconds (user + system) the command used: on a shared machine, steadier than its wall time."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, **kw)
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage, with the children it waited for
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd} exited with {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def costs(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """{cost: {checkout: median CPU seconds of a process doing only that}}, the checkouts
    (this one and ``--before``) alternated ``--repeat`` times."""
    sides = {"after": args.farm_path, "before": args.before}
    found: dict[str, dict[str, list[float]]] = {name: {side: [] for side in sides} for name in COSTS}
    for _ in range(args.repeat):
        for name, code in COSTS.items():
            for side, path in sides.items():
                found[name][side].append(cpu_timed([sys.executable, "-P", "-c", code], env=env_for(path)))
    return {name: {side: round(statistics.median(v), 3) for side, v in by.items()}
            for name, by in found.items()}


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO (\S+): (.*)$")
LOGGED = {  # (logger, start of message) -> the step it marks
    ("farm.controller.server", "controller listening"): "controller: listening",
    ("farm.controller.clients", "accepted project"): "controller: project accepted",
    ("farm.controller.agents", "agent "): "controller: agent joined (its HELLO)",
    ("farm.controller.server", "project "): "controller: run finished",
}


#: marks made once per job or frame: the timeline shows each worker's first and last, and
#: `handovers` sums up the gaps between them
REPEATED = ("frames: job sent to Blender", "frames: job done", "frames: frame saved",
            "frames: Blender took the job", "frames: Blender finished the job")


def handovers(marks: list[tuple[float, str, str]]) -> dict[str, float]:
    """Medians, in ms, over every worker's jobs: from a job's done line to the next job's
    arrival in Blender (the round trip through worker, agent and controller, and the plugin's
    work around Blender), from its arrival to its first frame saved, and from its last frame
    saved to its done line; and Blender's own idle time between jobs, from its word on when it
    finished one and took the next (``blender_idle_ms``: a job sent ahead is taken at once).
    A job sent ahead has no "sent" mark: the first two count only the others."""
    gaps: dict[str, list[float]] = {"done_to_next_sent_ms": [], "sent_to_first_saved_ms": [],
                                    "last_saved_to_done_ms": [], "blender_idle_ms": []}
    by_pid: dict[str, list[tuple[float, str]]] = {}
    for at, pid, event in sorted(marks):
        by_pid.setdefault(pid, []).append((at, event))
    for events in by_pid.values():
        last: dict[str, float] = {}
        for at, event in events:
            if event == "frames: job sent to Blender" and "frames: job done" in last:
                gaps["done_to_next_sent_ms"].append(at - last["frames: job done"])
            if event == "frames: frame saved" and last.get("frames: job sent to Blender", 0) > last.get(
                    "frames: frame saved", 0):
                gaps["sent_to_first_saved_ms"].append(at - last["frames: job sent to Blender"])
            if event == "frames: job done" and "frames: frame saved" in last:
                gaps["last_saved_to_done_ms"].append(at - last["frames: frame saved"])
            if event == "frames: Blender took the job" and "frames: Blender finished the job" in last:
                gaps["blender_idle_ms"].append(at - last["frames: Blender finished the job"])
            last[event] = at
    return {k: round(statistics.median(v) * 1000, 1) for k, v in gaps.items() if v}


def timeline(args: argparse.Namespace) -> tuple[list[tuple[float, str]], dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="farm-bench-timeline-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(args.timeline, project, ignore=shutil.ignore_patterns("output", ".farm"))
        trace = Path(tmp) / "trace.txt"
        env = env_for(args.farm_path, FARM_TRACE=str(trace), XDG_CACHE_HOME=str(Path(tmp) / "cache"))
        started = time.time()
        out = subprocess.run([sys.executable, "-P", "-m", "farm", "--log-level", "info", "submit", "--json",
                              "-n", str(args.agents), str(project)], capture_output=True, text=True, env=env)
        ended = time.time()
        steps = [(ended, "submitter exited")]
        marks = []
        for line in trace.read_text().splitlines() if trace.exists() else []:
            at, pid, event = line.split(" ", 2)
            marks.append((float(at), pid, event))
        repeated: dict[tuple[str, str], list[float]] = {}
        for at, pid, event in marks:
            if event in REPEATED:
                repeated.setdefault((pid, event), []).append(at)
            else:
                steps.append((at, f"[{pid}] {event}"))
        for (pid, event), times in repeated.items():
            steps.append((min(times), f"[{pid}] {event} (first of {len(times)})"))
            if len(times) > 1:
                steps.append((max(times), f"[{pid}] {event} (last of {len(times)})"))
        for line in out.stderr.splitlines():
            found = LOG_LINE.match(line)
            if not found:
                continue
            stamp, logger, message = found.groups()
            for (name, prefix), step in LOGGED.items():
                if logger == name and message.startswith(prefix):
                    at = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    steps.append((at, f"{step}: {message[:70]}"))
        if out.returncode:
            steps.append((ended, f"farm submit exited with {out.returncode}: {out.stderr[-300:]}"))
    return [(at - started, step) for at, step in sorted(steps)], handovers(marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--farm-path", type=Path, default=REPO,
                        help="the farm checkout to run (default: this one)")
    parser.add_argument("--timeline", type=Path, help="print the start-up timeline of `farm submit PROJECT`")
    parser.add_argument("--costs", action="store_true",
                        help="time each fixed cost in its own process, this checkout against --before")
    parser.add_argument("--before", type=Path, default=Path("/work/main"),
                        help="the checkout to compare with")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.farm_path = args.farm_path.resolve()
    if args.costs:
        print(f"load {load()}; medians of {args.repeat}, CPU seconds: after ({args.farm_path}) / "
              f"before ({args.before})")
        for name, by in costs(args).items():
            print(f"  {name:<42} {by['after']:.3f} / {by['before']:.3f}")
        print(f"load {load()}")
        return
    if args.timeline:
        print(f"load {load()}")
        steps, gaps = timeline(args)
        for offset, step in steps:
            print(f"{offset:8.3f} s  {step}")
        if gaps:
            print("between jobs, medians: " + ", ".join(f"{k} {v}" for k, v in gaps.items()))
        print(f"load {load()}")
        return
    result = bench(args)
    if args.json:
        print(json.dumps(result))
        return
    print(f"farm at {result['farm']}, {args.agents} agents, medians of {args.repeat}, "
          f"load {result['load_before']} -> {result['load_after']}")
    for key in ("python_s", "blender_s", "first_job_s", "summary_s", "exit_s", "cpu_s"):
        print(f"  {key:<12} {result[key]}")


if __name__ == "__main__":
    main()
