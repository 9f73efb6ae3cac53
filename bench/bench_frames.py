"""Benchmark the frames media type: farm on local agents against one Blender over the same frames.

    python bench/bench_frames.py [--agents 2] [--chunks sample,1] [--frames 1-48]
                                 [--heavy-samples 384] [--heavy-frames 1-8] [--repeat 1] [--json]
                                 [--adaptive sample,uneven] [--target 5] [--only-adaptive]

Comparisons, each against a baseline measured in the same run: one ``blender -b ... -a``
process over the same frames with the farm's total thread count (agents x threads per
agent: an embedded agent's one slot gets all of this machine's cores), then the same ffmpeg
encode the farm does. The farm runs through ``farm.embedded.submit_embedded``; its time
includes starting the controller and the agents, as a user's ``farm submit`` does.

The baseline's Blender runs as installed (``baseline_s``): a Blender whose scripts folder
its user cannot write (Debian's) or that sees ``PYTHONDONTWRITEBYTECODE`` compiles its
startup scripts on every start. Farm's Blenders keep them compiled in farm's cache
(`farm_frames.blender.bytecode_env`, filled once before the timings, as by any earlier
farm run); ``baseline_cached_s`` and ``speedup_vs_cached`` are the same Blender given that
folder, so both comparisons are printed; the first comparison is one Blender's start with
and without that folder.

- the turntable sample at each chunk of ``--chunks`` (``sample``: the sample's own chunk);
- a heavier turntable (``--heavy-samples``, so a frame takes seconds) at one frame per job:
  on one machine the agents share its cores, so the ideal is the baseline's time and the
  parallel efficiency is baseline time / farm time.

- ``--adaptive``: makespan with adaptive chunks (no ``chunk``, ``[jobs] target = --target``)
  against the sample's fixed chunk of 12, both on the farm, alternated in the same run:
  ``--target`` defaults to 5 s, about what the sample's chunk of 12 takes here, so the two differ
  in how the work is cut, not in the job length aimed at; ``sample`` is the turntable; ``uneven``
  the same scene whose last quarter of frames each sleep 0.4 s more in a frame-change handler
  (frames of uneven cost). ``speedup`` = fixed
  makespan / adaptive makespan; ``jobs`` and ``baseline_jobs`` are the job counts.

With ``--repeat N`` each comparison alternates baseline and farm N times and reports the
medians. Prints figures and the machine's load; with ``--json``, one JSON object per
comparison (``name``, ``farm_s``, ``baseline_s``, ``speedup`` = baseline / farm, ...).
Asserts nothing.
"""

from __future__ import annotations

import argparse
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

from farm_frames.blender import blender_version, bytecode_env, command_line, find_blender, setup_env
from farm_frames.framerange import frame_count, iter_frames
from farm_frames.media import frame_name
from farm_frames.video import contact_sheet, encode_video

from farm.embedded import submit_embedded
from farm.project import load_project

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_projects" / "turntable"
#: farm time / baseline time at most this (issue 18): speedup at least 1 / 1.05
TARGET_SPEEDUP = 1 / 1.05
TARGET_EFFICIENCY = 0.95


def copy_sample(dest: Path, frames: str, chunk: int | None, samples: int | None = None) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("output", ".farm"))
    toml = dest / "farm.toml"
    text = re.sub(r"^frames = .*$", f'frames = "{frames}"', toml.read_text(), count=1, flags=re.M)
    if chunk is not None:
        text = re.sub(r"^chunk = .*$", f"chunk = {chunk}", text, count=1, flags=re.M)
    if samples is not None:
        text = re.sub(r"^samples = .*$", f"samples = {samples}", text, count=1, flags=re.M)
    toml.write_text(text)
    return dest


#: the uneven scene: frames in the last quarter each sleep this long more (a heavier end of a shot)
UNEVEN_S = 0.4


def adaptive_pair(dest: Path, frames: str, target: float, uneven: bool) -> tuple[Path, Path]:
    """The sample with its fixed chunk, and the same without one and with ``[jobs] target``."""
    fixed = copy_sample(dest / "fixed", frames, None)
    adaptive = copy_sample(dest / "adaptive", frames, None)
    toml = adaptive / "farm.toml"
    text = re.sub(r"^chunk = .*\n", "", toml.read_text(), count=1, flags=re.M)
    toml.write_text(text + f"\n[jobs]\ntarget = {target}\n")
    if uneven:
        runs = load_project(fixed).settings["frames"]
        first, last = runs[0][0], runs[-1][1]
        heavy_from = last - (last - first + 1) // 4 + 1
        for project in (fixed, adaptive):
            with (project / "scene.py").open("a") as scene:
                scene.write(f"""

import time as _bench_time


def _bench_uneven(scene, *args):
    if scene.frame_current >= {heavy_from}:
        _bench_time.sleep({UNEVEN_S})


bpy.app.handlers.frame_change_pre.append(_bench_uneven)
""")
    return fixed, adaptive


def job_sizes(project: Path) -> list[int]:
    """Frames per job of the last run, in frame order (from the farm's journal)."""
    with sqlite3.connect(project / ".farm" / "journal.sqlite") as db:
        keys = sorted(key for (key,) in db.execute("SELECT key FROM jobs WHERE state = 'done'"))
    return [int(key.split("-")[2]) - int(key.split("-")[1]) + 1 for key in keys]


def compare_chunks(name: str, fixed: Path, adaptive: Path, *, agents: int, repeat: int,
                   quiet: bool) -> dict[str, Any]:
    """Alternate the fixed-chunk and the adaptive run ``repeat`` times; medians of the makespans."""
    load_before = os.getloadavg()[0]
    times: dict[Path, list[float]] = {fixed: [], adaptive: []}
    jobs: dict[Path, list[int]] = {fixed: [], adaptive: []}
    for _ in range(repeat):
        for project in (fixed, adaptive):
            elapsed, _, summary = farm_embedded(project, agents, with_summary=True)
            times[project].append(elapsed)
            jobs[project].append(summary.total)
    farm_s, baseline_s = statistics.median(times[adaptive]), statistics.median(times[fixed])
    row: dict[str, Any] = {
        "name": name,
        "farm_s": round(farm_s, 3),
        "baseline_s": round(baseline_s, 3),
        "speedup": round(baseline_s / farm_s, 3),
        "farm_all_s": [round(t, 2) for t in times[adaptive]],
        "baseline_all_s": [round(t, 2) for t in times[fixed]],
        "jobs": jobs[adaptive],
        "baseline_jobs": jobs[fixed],
        "sizes": job_sizes(adaptive),  # the last adaptive run's frames per job
        "baseline_chunk": load_project(fixed).settings["chunk"],
        "target_s": load_project(adaptive).target,
        "agents": agents,
        "runs": repeat,
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if not quiet:
        print(f"{name}: adaptive {farm_s:.2f} s ({row['jobs']} jobs), fixed chunk {row['baseline_chunk']} "
              f"{baseline_s:.2f} s ({row['baseline_jobs']} jobs): speedup {row['speedup']:.3f}; "
              f"load {row['load_1min'][0]} -> {row['load_1min'][1]}", flush=True)
    return row


def as_installed(env: dict[str, str]) -> dict[str, str]:
    """``env`` with Blender's Python as the user's environment leaves it: without the bytecode
    folder farm gives its Blenders (`farm_frames.blender.bytecode_env`)."""
    env = dict(env)
    for name in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def warm_bytecode() -> None:
    """Fill farm's Blender bytecode folder once, as any earlier farm run on this machine has."""
    subprocess.run([find_blender(), "-b", "--factory-startup", "--python-expr", "pass"],
                   env=bytecode_env(dict(os.environ)), capture_output=True, check=True)


def blender_starts(repeat: int) -> dict[str, Any]:
    """One Blender's start (``-b --factory-startup``, to its first line of Python and out),
    as installed against with farm's bytecode folder, alternated ``repeat`` times; medians of
    wall and CPU seconds (the child's own, from ``wait4``)."""
    cmd = [find_blender(), "-b", "--factory-startup", "--python-expr", "pass"]
    found: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(repeat):
        for cached in (False, True):
            env = bytecode_env(dict(os.environ)) if cached else as_installed(dict(os.environ))
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            found[cached].append((time.perf_counter() - started, usage.ru_utime + usage.ru_stime))
    med = {side: [statistics.median(x[i] for x in found[side]) for i in (0, 1)] for side in found}
    return {"name": "one Blender's start, with farm's bytecode folder vs as installed",
            "farm_s": round(med[True][0], 3), "baseline_s": round(med[False][0], 3),
            "speedup": round(med[False][0] / med[True][0], 3),
            "farm_cpu_s": round(med[True][1], 3), "baseline_cpu_s": round(med[False][1], 3), "runs": repeat}


def single_process(project_dir: Path, threads: int, *, cached: bool = False) -> tuple[float, float]:
    """(render seconds, encode seconds) for one Blender over every frame, then ffmpeg. Blender
    runs as installed, or with ``cached`` with farm's bytecode folder (`bytecode_env`)."""
    project = load_project(project_dir)
    settings = project.settings
    runs = settings["frames"]
    out = project_dir / "single"
    shutil.rmtree(out, ignore_errors=True)
    first, last = runs[0][0], runs[-1][1]
    cmd = command_line(find_blender(), scene=project_dir / settings["scene"], runs=[[first, last]],
                       frames_dir=out, threads=threads, fmt=settings["format"])
    env = setup_env(settings, project_dir)
    env = env if cached else as_installed(env)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    render_s = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the single Blender process failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    frames = [out / frame_name(n, settings["format"]) for n in iter_frames(runs)]
    video = settings["video"]
    started = time.perf_counter()
    encode_video(frames, project_dir / "single.mp4", fps=video["fps"], codec=video["codec"], crf=video["crf"])
    contact_sheet(frames, project_dir / "single-contact.png")
    return render_s, time.perf_counter() - started


def farm_embedded(project_dir: Path, agents: int, *, with_summary: bool = False) -> Any:
    """(wall seconds including starting the controller and agents, the run's own seconds[, summary])."""
    shutil.rmtree(project_dir / "output", ignore_errors=True)
    shutil.rmtree(project_dir / ".farm", ignore_errors=True)  # no results reused from a repeat
    started = time.perf_counter()
    summary = submit_embedded(project_dir, agents=agents)
    elapsed = time.perf_counter() - started
    if not summary.ok:
        raise RuntimeError(f"farm run failed: {summary.error or summary.failures[:1]}")
    return (elapsed, summary.elapsed_s, summary) if with_summary else (elapsed, summary.elapsed_s)


def compare(name: str, project: Path, *, agents: int, threads: int, repeat: int, ideal: float | None,
            quiet: bool) -> dict[str, Any]:
    """Alternate baseline and farm ``repeat`` times; medians."""
    load_before = os.getloadavg()[0]
    base, cached, farm, farm_run, render = [], [], [], [], []
    for _ in range(repeat):
        render_s, encode_s = single_process(project, threads)
        base.append(render_s + encode_s)
        render.append(render_s)
        cached.append(sum(single_process(project, threads, cached=True)))
        elapsed, run_s = farm_embedded(project, agents)
        farm.append(elapsed)
        farm_run.append(run_s)
    settings = load_project(project).settings
    frames = frame_count(settings["frames"])
    baseline_s, farm_s = statistics.median(base), statistics.median(farm)
    row: dict[str, Any] = {
        "name": name,
        "farm_s": round(farm_s, 3),
        "baseline_s": round(baseline_s, 3),
        "speedup": round(baseline_s / farm_s, 3),
        # the same Blender given farm's compiled-scripts folder: what bytecode_env is worth
        "baseline_cached_s": round(statistics.median(cached), 3),
        "speedup_vs_cached": round(statistics.median(cached) / farm_s, 3),
        "farm_run_s": round(statistics.median(farm_run), 3),
        "baseline_render_ms_per_frame": round(statistics.median(render) / frames * 1000, 1),
        "frames": frames,
        "chunk": settings["chunk"],
        "samples": settings["samples"],
        "agents": agents,
        "baseline_threads": threads,
        "runs": repeat,
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if ideal is not None:
        row["efficiency"] = round(row["speedup"] / ideal, 3)
        row["target"] = f"efficiency >= {TARGET_EFFICIENCY}"
        row["met"] = row["efficiency"] >= TARGET_EFFICIENCY
    else:
        row["target"] = "farm_s <= 1.05 x baseline_s"
        row["met"] = row["speedup"] >= TARGET_SPEEDUP
    if not quiet:
        extra = f", efficiency {row['efficiency']:.3f}" if ideal is not None else ""
        print(f"{name}: farm {farm_s:.2f} s (run {row['farm_run_s']:.2f} s), one Blender {baseline_s:.2f} s "
              f"({row['baseline_cached_s']:.2f} s with farm's bytecode folder) "
              f"({row['baseline_render_ms_per_frame']:.0f} ms/frame): farm takes {farm_s / baseline_s:.2f}x, "
              f"speedup {row['speedup']:.3f}{extra}; {'met' if row['met'] else 'NOT met'} "
              f"({row['target']}); load {row['load_1min'][0]} -> {row['load_1min'][1]}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--chunks", default="sample,1",
                        help="turntable chunk sizes, comma-separated; 'sample' is the sample's own")
    parser.add_argument("--frames", default="1-48")
    parser.add_argument("--heavy-samples", type=int, default=384, help="0 leaves the heavy scene out")
    parser.add_argument("--heavy-frames", default="1-8")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None,
                        help="the single process's threads (default: what the agents get in total)")
    parser.add_argument("--adaptive", default="sample,uneven",
                        help="scenes for fixed against adaptive chunks (sample, uneven; '' for none)")
    parser.add_argument("--target", type=float, default=5.0,
                        help="[jobs] target of the adaptive runs, seconds (scaled to these fast frames)")
    parser.add_argument("--only-adaptive", action="store_true", help="skip the one-Blender comparisons")
    parser.add_argument("--json", action="store_true", help="one JSON object per comparison")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    # an embedded agent has one slot, and a slot gets the node's cores divided by its slots
    threads = args.threads or args.agents * cores
    blender = find_blender()
    if not args.json:
        print(f"Blender {blender_version(blender)} at {blender}; {cores} cores; {args.agents} agents; "
              f"one Blender with -t {threads}", flush=True)
    warm_bytecode()
    rows = [blender_starts(max(3, args.repeat))]
    if not args.json:
        row = rows[0]
        print(f"{row['name']}: {row['farm_s']:.2f} s ({row['farm_cpu_s']:.2f} CPU-s) against "
              f"{row['baseline_s']:.2f} s ({row['baseline_cpu_s']:.2f} CPU-s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        for scene in filter(None, args.adaptive.split(",")):
            if scene not in ("sample", "uneven"):
                sys.exit(f"--adaptive: unknown scene {scene!r} (sample, uneven)")
            fixed, adaptive = adaptive_pair(Path(tmp, f"adaptive-{scene}"), args.frames, args.target,
                                            scene == "uneven")
            label = f"{'uneven ' if scene == 'uneven' else ''}turntable {args.frames}"
            label += ": adaptive chunks vs fixed"
            rows.append(compare_chunks(label, fixed, adaptive, agents=args.agents, repeat=args.repeat,
                                       quiet=args.json))
        for chunk in ([] if args.only_adaptive else args.chunks.split(",")):
            size = None if chunk == "sample" else int(chunk)
            project = copy_sample(Path(tmp, f"chunk-{chunk}"), args.frames, size)
            label = f"turntable {args.frames}, chunk {load_project(project).settings['chunk']}"
            label += " (the sample's)" if size is None else ""
            rows.append(compare(label, project, agents=args.agents, threads=threads, repeat=args.repeat,
                                ideal=None, quiet=args.json))
        if args.heavy_samples and not args.only_adaptive:
            project = copy_sample(Path(tmp, "heavy"), args.heavy_frames, 1, samples=args.heavy_samples)
            label = f"heavy turntable {args.heavy_frames}, {args.heavy_samples} samples, chunk 1"
            # on one machine the agents share its cores: the ideal is the single process's time
            rows.append(compare(label, project, agents=args.agents, threads=threads, repeat=args.repeat,
                                ideal=1.0, quiet=args.json))
    if args.json:
        for row in rows:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
