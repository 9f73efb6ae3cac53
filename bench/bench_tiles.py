"""Map tiles: farm on local agents against renderd (mod_tile's render daemon), in the same run.

    python bench/bench_tiles.py [--zoom 0-6] [--agents 2] [--threads 2] [--format png]
                                [--repeat 3] [--sample 60] [--no-fixed] [--json]

The project is the world_map sample (copied to a temp folder) at the zooms given.
- baseline, when `renderd` and `render_list` are installed (Debian: `apt-get install renderd`):
  renderd with `--threads` render threads on the same style, started on a unix socket in a
  temp folder with its own renderd.conf and tile folder, warmed up (style loaded); timed is
  `render_list -a -f -n <threads>` over the zooms into a fresh tile folder (8x8 metatiles in
  .meta files, each tile a png256 from Mapnik 3.1: Debian's renderd 0.6.1 writes no other
  format). Its start-up is not timed; farm's is. Without renderd: this process, one 256 px
  render per tile, PNG encode and file write included (`--naive` forces it).
- farm: `farm.embedded.submit_embedded` with --agents local agents (controller, agent
  start-up, file sync, tile files and MBTiles all included), wall-clock time of the call; the
  controller groups metatiles per job (adaptive chunks). Unless --no-fixed, the same with
  ``chunk = 1`` (one metatile per job, as before grouping) runs beside it.
Runs alternate (baseline, farm, farm fixed, baseline, ...) with fresh outputs; the medians are
compared: farm against the baseline, and grouped against one metatile per job.
A sample of tiles is compared between the two: the share of pixels that differ by more than
16 in a channel (labels may shift by 1-2 px between Mapnik versions), and the bytes.
CPU-seconds: renderd's process, or farm's controller (this process) plus its agents. Idle
core-seconds: the cores' time the run left unused, ``cores x wall - CPU-seconds``, with cores
= renderd's threads or farm's agents (1 slot each), never above the machine's.
The machine may be shared: the load average is printed beside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import mapnik
from farm_maptiles.config import parse_zoom
from farm_maptiles.mapstyle import load_map, read_style, register_fonts
from farm_maptiles.metatile import ENCODINGS, render_block, tile_name
from farm_maptiles.tilemath import WORLD_BBOX, tile_range

from farm.controller import chunking
from farm.embedded import EmbeddedFarm
from farm.project import STATE_DIR, load_project

SAMPLE = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"
RENDERD_TIMEOUT_S = 600
#: renderd 0.6.1 writes every tile as Mapnik's png256 (a palette, like farm's `png8`); its TYPE
#: setting does not change that, so there is one map
RENDERD_MAP = "world"


def make_project(folder: Path, zoom: str, fmt: str, chunk: int | None = None) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(SAMPLE / "world.xml", folder / "world.xml")
    shutil.copytree(SAMPLE / "data", folder / "data")
    (folder / "farm.toml").write_text(
        '[project]\nname = "world_map"\nmedia_type = "maptiles"\n\n'
        f'[maptiles]\nstyle = "world.xml"\nzoom = "{zoom}"\nformat = "{fmt}"\n'
        'attribution = "Made with Natural Earth"\n' + (f"chunk = {chunk}\n" if chunk else "")
    )
    return folder


def idle(cores: int, wall: float, cpu: float) -> float:
    """Core-seconds left unused: ``cores`` (at most the machine's) for ``wall`` s, less the CPU-s used."""
    return max(0.0, min(cores, os.cpu_count() or cores) * wall - cpu)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def all_tiles(zoom: str) -> list[tuple[int, int, int]]:
    low, high = parse_zoom(zoom)
    return [(z, x, y) for z in range(low, high + 1) for x, y in tile_range(WORLD_BBOX, z).tiles()]


class Renderd:
    """A renderd of our own: its config, socket, stats and tiles in `folder`; stopped on exit."""

    def __init__(self, folder: Path, style: Path, threads: int, max_zoom: int) -> None:
        self.folder = folder
        self.tiles = folder / "tiles"
        self.socket = folder / "renderd.sock"
        self.threads = threads
        folder.mkdir(parents=True)
        self.config = folder / "renderd.conf"
        self.config.write_text(
            f"[renderd]\nsocketname={self.socket}\nnum_threads={threads}\ntile_dir={self.tiles}\n"
            f"stats_file={folder / 'renderd.stats'}\n\n"
            "[mapnik]\nplugins_dir=/usr/lib/mapnik/3.1/input\nfont_dir=/usr/share/fonts/truetype\n"
            "font_dir_recurse=true\n\n"
            f"[{RENDERD_MAP}]\nURI=/{RENDERD_MAP}/\nXML={style}\nHOST=localhost\nTILESIZE=256\n"
            f"MAXZOOM={max(max_zoom, 1)}\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "renderd.log"

    def __enter__(self) -> Renderd:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(["renderd", "-f", "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"renderd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.render("0")  # warm-up: every render thread has loaded the style before the timed runs
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu_s(self) -> float:
        """User + system CPU-seconds of the renderd process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def render(self, zoom: str, name: str = RENDERD_MAP) -> float:
        """`render_list -a -f` of map `name` over the zooms into an empty tile folder; returns the wall time."""
        low, high = parse_zoom(zoom)
        shutil.rmtree(self.tiles / name, ignore_errors=True)
        self.tiles.mkdir(exist_ok=True)
        cmd = ["render_list", "-a", "-f", "-n", str(self.threads), "-m", name, "-s", str(self.socket),
               "-t", str(self.tiles), "-z", str(low), "-Z", str(high), "-l", "1000"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, timeout=RENDERD_TIMEOUT_S)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"render_list failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        return wall

    def read_tiles(self, name: str = RENDERD_MAP) -> dict[tuple[int, int, int], bytes]:
        """Every tile of map `name` in renderd's metatile files (mod_tile's .meta: header, offset/size
        index, PNGs)."""
        found = {}
        for path in (self.tiles / name).rglob("*.meta"):
            data = path.read_bytes()
            magic, count, mx, my, z = struct.unpack_from("<4s4i", data)
            side = int(count ** 0.5)
            assert magic == b"META", path
            for i in range(count):
                offset, size = struct.unpack_from("<2i", data, 20 + 8 * i)
                x, y = mx + i // side, my + i % side
                if size and x < 2 ** z and y < 2 ** z:
                    found[(z, x, y)] = data[offset:offset + size]
        return found


def naive(project: Path, zoom: str, fmt: str, out: Path) -> float:
    """One render + one encode + one file per tile, in this process."""
    start = time.perf_counter()
    register_fonts()
    m = load_map(read_style(project / "world.xml", project))
    encoding = ENCODINGS[fmt]
    for z, x, y in all_tiles(zoom):
        image = render_block(m, z, x, y, 1, 256)
        path = out / tile_name(z, x, y)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.to_string(encoding))
    return time.perf_counter() - start


def slot_gaps(events: list, durations: dict[str, float]) -> tuple[float, float, float, float]:
    """Seconds the agents' slots spent not rendering (1 slot per agent), summed over agents:
    (each agent's span from its first job's dispatch to its last job's collate, less its jobs'
    render time; the controller's share of it: from collating a job to dispatching the agent's
    next one; the jobs' render time, wall-clock, on the workers; the render phase, from the
    first dispatch to the last collate: the run less start-up and finalize)."""
    spans: dict[str, list[float]] = {}
    turns = 0.0
    for event in events:
        if event.type in ("job.started", "job.done") and event.agent:
            times = spans.setdefault(event.agent, [])
            if event.type == "job.started" and len(times) % 2 == 0 and times:  # the slot was free since
                turns += event.time - times[-1]
            times.append(event.time)
    busy: dict[str, float] = {}
    for key, seconds in durations.items():
        agent = key.split("\0")[0]
        busy[agent] = busy.get(agent, 0.0) + seconds
    idle = sum(max(times) - min(times) - busy.get(agent, 0.0) for agent, times in spans.items())
    every = [t for times in spans.values() for t in times] or [0.0]
    return idle, turns, sum(busy.values()), max(every) - min(every)


def run_farm(root: Path, zoom: str, fmt: str, agents: int, n: int,
             chunk: int | None = None) -> tuple[float, float, float, int, tuple[float, ...], Path]:
    """A fresh project rendered by farm; returns (wall s, CPU s of controller and agents, CPU s of the
    controller alone, jobs, slots' idle s between jobs (`slot_gaps`), output folder)."""
    project = make_project(root, zoom, fmt, chunk)
    durations: dict[str, float] = {}  # agent + NUL + a count -> a job's render time on its worker
    record = chunking.AdaptiveChunks.record

    def timed(self, agent: str, units: int, seconds: float) -> None:  # every maptiles result passes here
        durations[f"{agent}\0{len(durations)}"] = seconds
        record(self, agent, units, seconds)

    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    chunking.AdaptiveChunks.record = timed
    try:  # submit_embedded, holding on to the controller's events
        loaded = load_project(project)
        with EmbeddedFarm(loaded.root / STATE_DIR, agents) as farm:
            summary = farm.submit(loaded)
            events = list(farm.controller.events.buffer)
    finally:
        chunking.AdaptiveChunks.record = record
    wall = time.perf_counter() - start
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    controller = sum(getattr(after_self, f) - getattr(before_self, f) for f in ("ru_utime", "ru_stime"))
    agents_cpu = sum(getattr(after_children, f) - getattr(before_children, f) for f in ("ru_utime", "ru_stime"))
    if not summary.ok:
        raise SystemExit(f"farm run failed: {summary.error or summary.failures}")
    tiles = sum(1 for _ in (project / "output" / "tiles").rglob("*.png"))
    if tiles != n:
        raise SystemExit(f"farm wrote {tiles} tiles, expected {n}")
    return wall, controller + agents_cpu, controller, summary.total, slot_gaps(events, durations), project / "output"


def compare(ours: Path, theirs: dict[tuple[int, int, int], bytes], keys: list[tuple[int, int, int]]) -> dict:
    """Pixels differing by more than 16 in a channel, as a share of each sampled tile; and the bytes."""
    shares, our_bytes, their_bytes = [], 0, 0
    for key in keys:
        data = (ours / tile_name(*key)).read_bytes()
        mine, other = mapnik.Image.from_buffer(data), mapnik.Image.from_buffer(theirs[key])
        shares.append(mine.compare(other, 16) / (mine.width() * mine.height()))
        our_bytes += len(data)
        their_bytes += len(theirs[key])
    return {"sampled": len(keys), "differing_pixels_mean": round(statistics.fmean(shares), 5),
            "differing_pixels_max": round(max(shares), 5), "tiles_at_most_1pct": sum(s <= 0.01 for s in shares),
            "bytes_farm": our_bytes, "bytes_baseline": their_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoom", default="0-6")
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="renderd render threads and render_list requests")
    parser.add_argument("--format", default="png", choices=sorted(ENCODINGS))
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each; medians are compared")
    parser.add_argument("--sample", type=int, default=60, help="tiles compared between the two")
    parser.add_argument("--naive", action="store_true", help="baseline: one render per tile in this process")
    parser.add_argument("--json", action="store_true", help="one JSON object per comparison")
    parser.add_argument("--no-fixed", action="store_true", help="skip farm at one metatile per job")
    # bench/run_all.py --quick still passes the old flag; there is no in-process breakdown any more
    parser.add_argument("--no-breakdown", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_renderd = not args.naive and shutil.which("renderd") and shutil.which("render_list")
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    keys = all_tiles(args.zoom)
    n = len(keys)
    say(f"mapnik {mapnik.version_string()} | {os.cpu_count()} cores | load average {load()} | zoom {args.zoom} "
        f"| {n} tiles | format {args.format}")

    with tempfile.TemporaryDirectory(prefix="bench-tiles-") as tmp:
        root = Path(tmp)
        style = make_project(root / "style", args.zoom, args.format) / "world.xml"
        if use_renderd:
            server = Renderd(root / "renderd", style, args.threads, parse_zoom(args.zoom)[1]).__enter__()
            baselines = {RENDERD_MAP: f"renderd {args.threads} threads (png256)"}
        else:
            server = None
            baselines = {"naive": "1 process, 1 render per tile"}
        base_runs: dict[str, list[tuple[float, float]]] = {b: [] for b in baselines}
        # farm variants: grouped (adaptive chunks, the default) and one metatile per job
        variants = {"grouped": None} if args.no_fixed else {"grouped": None, "fixed": 1}
        farm_runs: dict[str, list[Run]] = {v: [] for v in variants}
        base_cores = args.threads if server is not None else 1
        try:
            for i in range(args.repeat):
                for b, label in baselines.items():
                    if server is not None:
                        cpu0 = server.cpu_s()
                        wall = server.render(args.zoom, b)
                        cpu = server.cpu_s() - cpu0
                    else:
                        cpu0 = time.process_time()
                        wall = naive(style.parent, args.zoom, args.format, root / f"naive{i}")
                        cpu = time.process_time() - cpu0
                    base_runs[b].append((wall, cpu))
                    say(f"  {label:<40} {wall:7.2f} s {n / wall:7.1f} tiles/s {cpu:6.2f} CPU-s "
                        f"{idle(base_cores, wall, cpu):5.2f} idle core-s | load {load()}")
                # grouped and fixed take turns going first: neither always follows the baseline
                for v, chunk in (list(variants.items()) if i % 2 == 0 else list(variants.items())[::-1]):
                    wall, cpu, controller, jobs, gaps, out = run_farm(root / f"farm-{v}{i}", args.zoom,
                                                                      args.format, args.agents, n, chunk)
                    farm_runs[v].append(Run(wall, cpu, controller, jobs, *gaps, load()))
                    if v == "grouped":
                        output = out
                    label = f"farm {args.agents} agents {args.format} {v} ({jobs} jobs)"
                    say(f"  {label:<40} {wall:7.2f} s {n / wall:7.1f} tiles/s {cpu:6.2f} CPU-s "
                        f"({controller:.2f} controller) {idle(args.agents, wall, cpu):5.2f} idle core-s, "
                        f"{gaps[0]:5.2f} s between jobs ({gaps[1]:.2f} s collate to dispatch), {gaps[2]:.2f} s "
                        f"rendering, {gaps[3]:.2f} s first dispatch to last collate | load {load()}")
                # earlier outputs stay until the end: on ext4, creating files soon after deleting
                # thousands near them costs far more (see farm/filesync/placement.py)
            sample = random.Random(1).sample(keys, min(args.sample, n))
            agreement = {}
            for b in baselines:
                if server is not None:
                    theirs = server.read_tiles(b)
                else:
                    theirs = {k: (root / f"naive{args.repeat - 1}" / tile_name(*k)).read_bytes() for k in sample}
                agreement[b] = compare(output, theirs, sample)
        finally:
            if server is not None:
                server.__exit__(None, None, None)

    rows = []
    farm = farm_runs["grouped"]
    farm_s = statistics.median(r.wall for r in farm)
    for b, label in baselines.items():
        base_s = statistics.median(w for w, _ in base_runs[b])
        base_cpu = statistics.median(c for _, c in base_runs[b])
        rows.append({
            "name": f"tiles z{args.zoom}: farm {args.agents} agents {args.format} vs {label}",
            "farm_s": round(farm_s, 3), "baseline_s": round(base_s, 3), "speedup": round(base_s / farm_s, 3),
            "tiles": n, "farm_tiles_per_s": round(n / farm_s, 1), "baseline_tiles_per_s": round(n / base_s, 1),
            "farm_runs_s": [round(r.wall, 3) for r in farm],
            "baseline_runs_s": [round(w, 3) for w, _ in base_runs[b]],
            **summary("farm", farm, args.agents),
            "baseline_cpu_s": round(base_cpu, 2),
            "baseline_idle_core_s": round(statistics.median(idle(base_cores, *r) for r in base_runs[b]), 2),
            "load_average": load(), **agreement[b],
        })
    if "fixed" in farm_runs:
        fixed = farm_runs["fixed"]
        fixed_s = statistics.median(r.wall for r in fixed)
        rows.append({
            "name": f"tiles z{args.zoom}: farm {args.agents} agents {args.format} grouped "
                    "vs one metatile per job",
            "farm_s": round(farm_s, 3), "baseline_s": round(fixed_s, 3),
            "speedup": round(fixed_s / farm_s, 3),
            "tiles": n, "farm_runs_s": [round(r.wall, 3) for r in farm],
            "baseline_runs_s": [round(r.wall, 3) for r in fixed],
            **summary("farm", farm, args.agents), **summary("baseline", fixed, args.agents),
            "load_average": load(),
        })
    for row in rows:
        if args.json:
            print(json.dumps(row), flush=True)
            continue
        print(f"{row['name']}: farm {row['farm_s']:.2f} s ({row['farm_jobs']} jobs), baseline "
              f"{row['baseline_s']:.2f} s, speed-up x{row['speedup']:.2f}; idle core-s farm "
              f"{row['farm_idle_core_s']}, baseline {row.get('baseline_idle_core_s')} "
              f"| load average {load()}")
        if "sampled" in row:
            print(f"  sampled {row['sampled']} tiles: differing pixels mean "
                  f"{row['differing_pixels_mean']:.2%}, "
                  f"max {row['differing_pixels_max']:.2%}; bytes farm {row['bytes_farm']}, "
                  f"baseline {row['bytes_baseline']}")


class Run(NamedTuple):
    """One farm run: wall and CPU seconds (all of farm's processes; the controller's), its jobs,
    the load average after it."""

    wall: float
    cpu: float
    controller: float
    jobs: int
    gaps: float
    turns: float
    render: float
    phase: float
    load: str


def summary(prefix: str, runs: list[Run], agents: int) -> dict:
    """Medians of farm runs, keys prefixed: CPU-s, controller CPU-s, idle core-s, jobs; each run's load."""
    return {
        f"{prefix}_cpu_s": round(statistics.median(r.cpu for r in runs), 2),
        f"{prefix}_controller_cpu_s": round(statistics.median(r.controller for r in runs), 2),
        f"{prefix}_idle_core_s": round(statistics.median(idle(agents, r.wall, r.cpu) for r in runs), 2),
        f"{prefix}_jobs": round(statistics.median(r.jobs for r in runs)),
        f"{prefix}_slot_gaps_s": round(statistics.median(r.gaps for r in runs), 2),
        f"{prefix}_collate_to_dispatch_s": round(statistics.median(r.turns for r in runs), 2),
        f"{prefix}_render_s": round(statistics.median(r.render for r in runs), 2),
        f"{prefix}_dispatch_to_collate_s": round(statistics.median(r.phase for r in runs), 2),
        f"{prefix}_loads": [r.load for r in runs],
    }


if __name__ == "__main__":
    main()
