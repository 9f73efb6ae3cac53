"""Scale and recovery of the controller.

    python bench/bench_scale.py [--jobs 1000000] [--skip-scale] [--skip-recovery]

1. A synthetic project of 1,000,000 no-op jobs on a `farm controller` process with 2 agents:
   the controller's resident memory sampled through the run (target: flat, under 150 MB) and
   the time from submit to the first dispatch (target: under 1 s). Baseline: the controller's
   memory when idle, before the submit.
2. Recovery: an agent holding jobs is SIGKILLed; time until every job it held is running on
   another agent (target: under the dead-agent timeout, heartbeat x liveness, + 1 s).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, report, synthetic_project, wait_for_agents

from farm.client import Client
from farm.controller.server import Controller
from farm.embedded import start_local_agents, stop_agents
from farm.project import load_project


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scale(jobs: int, tmp: Path) -> None:
    url = f"ipc://{tmp}/ctl.sock"
    ctl = subprocess.Popen([sys.executable, "-m", "farm", "controller", "--bind", url, "--state-dir", str(tmp / "s")])
    procs = start_local_agents(url, 2)
    try:
        wait_for_agents(url, 2)
        idle = rss_mb(ctl.pid)
        samples = []
        with Client(url, timeout=60) as client:
            start = time.perf_counter()
            run_id = client.submit(load_project(synthetic_project(tmp / "p", jobs)))
            first = None
            while True:
                msg = client.receive()
                samples.append((msg.body.get("done", 0), rss_mb(ctl.pid)))
                if first is None and msg.body.get("first_dispatch_s") is not None:
                    first = msg.body["first_dispatch_s"]
                if msg.body.get("summary", {}).get("id") == run_id:
                    break
            elapsed = time.perf_counter() - start
        peak = max(m for _, m in samples)
        quarter = [m for d, m in samples if d >= jobs // 4][:1] or [0]
        report("1M jobs: controller RSS", f"peak {peak:.0f} MB (at 25 %: {quarter[0]:.0f} MB, end "
               f"{samples[-1][1]:.0f} MB)", f"idle {idle:.0f} MB", ratio=peak / idle, target="flat, < 150 MB")
        report("1M jobs: first dispatch", f"{first:.3f} s after submit", f"whole run {elapsed:.0f} s "
               f"({jobs / elapsed:,.0f} jobs/s)", ratio=elapsed / max(first, 1e-9), target="< 1 s")
    finally:
        ctl.terminate()
        ctl.wait()
        stop_agents(procs)


def recovery(tmp: Path, heartbeat: float = 1.0, liveness: int = 5) -> None:
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp / "r", heartbeat=heartbeat, liveness=liveness).start()
    (victim,) = start_local_agents(ctl.url, 1, slots=2)
    procs = [victim]
    try:
        wait_for_agents(ctl.url, 1)
        with Client(ctl.url, timeout=60) as client:
            client.submit(load_project(synthetic_project(tmp / "slow", 2, sleep=60.0)))
            while len(ctl.leases) < 2:  # the victim holds both jobs
                time.sleep(0.01)
            procs += start_local_agents(ctl.url, 1, slots=2, first=2)  # an idle agent with room for them
            wait_for_agents(ctl.url, 2)
            victim.kill()
            killed = time.perf_counter()
            while not (len(ctl.leases) == 2 and all(lease.agent_id == "local-2" for lease in ctl.leases.values())):
                time.sleep(0.002)
            took = time.perf_counter() - killed
        limit = heartbeat * liveness
        report("recovery after SIGKILL", f"{took:.3f} s until its 2 jobs ran elsewhere",
               f"dead-agent timeout {limit:.1f} s", ratio=limit / took, target=f"< {limit + 1:.1f} s")
    finally:
        ctl.stop(shutdown_agents=True)
        stop_agents(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-recovery", action="store_true")
    args = parser.parse_args()
    print(f"# scale and recovery benchmark on {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_recovery:
            recovery(Path(tmp))
        if not args.skip_scale:
            scale(args.jobs, Path(tmp))


if __name__ == "__main__":
    main()
