"""Benchmark the frames media type: the turntable sample on local agents vs one Blender.

    python bench/bench_frames.py [--agents 2] [--chunks 1,4,12,24] [--frames 1-48]

Baseline, measured in the same run: one ``blender -b ... -a`` process over the same
frames with the farm's total thread count (agents x threads per agent), then the same
ffmpeg encode the farm does. The farm runs through ``farm.embedded.submit_embedded``
once per chunk size; Blender's start-up (about a second) is paid once per job, so
small chunks cost more. Where the embedded farm is not available, the chunked render
is timed in one process (``farm.testing.run_local``) instead, which still shows what
chunking costs. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from farm_frames.blender import blender_version, command_line, find_blender, setup_env
from farm_frames.framerange import frame_count, iter_frames
from farm_frames.media import frame_name
from farm_frames.video import contact_sheet, encode_video

from farm.project import load_project

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_projects" / "turntable"


def copy_sample(dest: Path, frames: str, chunk: int) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("output", ".farm"))
    toml = dest / "farm.toml"
    text = re.sub(r"^frames = .*$", f'frames = "{frames}"', toml.read_text(), count=1, flags=re.M)
    text = re.sub(r"^chunk = .*$", f"chunk = {chunk}", text, count=1, flags=re.M)
    toml.write_text(text)
    return dest


def single_process(project_dir: Path, threads: int) -> tuple[float, float]:
    """(render seconds, encode seconds) for one Blender over every frame, then ffmpeg."""
    project = load_project(project_dir)
    settings = project.settings
    runs = settings["frames"]
    out = project_dir / "single"
    first, last = runs[0][0], runs[-1][1]
    cmd = command_line(find_blender(), scene=project_dir / settings["scene"], runs=[[first, last]],
                       frames_dir=out, threads=threads, fmt=settings["format"])
    started = time.perf_counter()
    done = subprocess.run(cmd, env=setup_env(settings, project_dir), capture_output=True, text=True, check=False)
    render_s = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the single Blender process failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    frames = [out / frame_name(n, settings["format"]) for n in iter_frames(runs)]
    video = settings["video"]
    started = time.perf_counter()
    encode_video(frames, project_dir / "single.mp4", fps=video["fps"], codec=video["codec"], crf=video["crf"])
    contact_sheet(frames, project_dir / "single-contact.png")
    return render_s, time.perf_counter() - started


def farm_embedded(project_dir: Path, agents: int) -> tuple[float, float]:
    """(wall seconds including starting the controller and agents, the run's own seconds)."""
    from farm.embedded import submit_embedded

    started = time.perf_counter()
    summary = submit_embedded(project_dir, agents=agents)
    elapsed = time.perf_counter() - started
    if not summary.ok:
        raise RuntimeError(f"farm run failed: {summary.error or summary.failures[:1]}")
    return elapsed, summary.elapsed_s


def farm_in_process(project_dir: Path, threads: int) -> float:
    from farm.testing import run_local

    started = time.perf_counter()
    run_local(project_dir, threads=threads)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--chunks", default="1,4,12,24", help="chunk sizes to try, comma-separated")
    parser.add_argument("--frames", default="1-48")
    parser.add_argument("--threads", type=int, default=None,
                        help="the single process's threads (default: what the agents get in total)")
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    cores = os.cpu_count() or 1
    # an embedded agent has one slot, and a slot gets the node's cores divided by its slots
    threads = args.threads or args.agents * cores
    blender = find_blender()
    print(f"Blender {blender_version(blender)} at {blender}; {cores} cores; turntable frames {args.frames}")

    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        base = copy_sample(Path(tmp, "single"), args.frames, chunks[0])
        frames = frame_count(load_project(base).settings["frames"])
        render_s, encode_s = single_process(base, threads)
        baseline = render_s + encode_s
        print(f"one blender -a process, -t {threads}: render {render_s:.2f} s "
              f"({render_s / frames * 1000:.0f} ms/frame), encode {encode_s:.2f} s, total {baseline:.2f} s")

        mode = "embedded"
        try:
            import farm.embedded  # noqa: F401
        except ImportError as exc:
            mode = "in-process"
            print(f"farm.embedded is not available ({exc}); timing the chunked render in one process")
        for chunk in chunks:
            project = copy_sample(Path(tmp, f"chunk-{chunk}"), args.frames, chunk)
            jobs = -(-frames // chunk)
            try:
                if mode == "embedded":
                    elapsed, run_s = farm_embedded(project, args.agents)
                    label = f"{args.agents} agents, run {run_s:.2f} s of it"
                else:
                    raise RuntimeError("no embedded farm")
            except Exception as exc:  # the farm core is young: fall back, say so
                if mode == "embedded":
                    print(f"  chunk {chunk}: the embedded farm failed ({type(exc).__name__}: {exc}); "
                          "timing in one process instead")
                mode = "in-process"
                elapsed = farm_in_process(project, max(1, threads // args.agents))
                label = f"1 process, -t {max(1, threads // args.agents)}"
            print(f"  chunk {chunk:>3} ({jobs:>2} jobs, {label}): {elapsed:6.2f} s, "
                  f"{elapsed / baseline:.2f}x the single process's time")


if __name__ == "__main__":
    main()
