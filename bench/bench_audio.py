"""Benchmark the audio media type: a 30-minute input through the podcast chain, farm vs one ffmpeg.

    python bench/bench_audio.py [--minutes 30] [--agents 2] [--segment SECONDS] [--format flac]
                                [--variants sample,no-loudnorm] [--json]

The input is made at bench time in a temporary folder: the podcast sample's three
minutes, looped (nothing is downloaded, nothing is left behind). Baseline, measured in
the same run: the same chain over the whole file with ffmpeg itself, the way one would
without a farm: loudnorm's first pass, then one run of the whole chain encoding every
output. The farm runs through ``farm.embedded.submit_embedded`` (controller in-process,
real agent processes); its time includes loading the project (which counts the
input's samples), the agents starting, the segments (each reading its range of the
input), the join and the encodes. Prints both times, the ratio and whether the outputs are
byte-identical; asserts nothing. The second variant drops loudnorm, whose analysis is
one serial whole-file pass that the encodes wait for, to show the parallel part alone.
``--segment`` defaults to the media type's own default; ``--json`` prints one JSON object
per comparison (``name``, ``farm_s``, ``baseline_s``, ``speedup`` = baseline / farm, the
CPU seconds each used (``baseline_cpu_s``, ``farm_cpu_s``: user + system of the processes
that ended, the farm's in-process controller included), the machine's load average before
and after, whether the outputs are byte-identical).
"""

from __future__ import annotations

import argparse
import array
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from common import machine, report
from farm_audio import ffmpeg
from farm_audio.chain import chain_text, parse_chain
from farm_audio.config import analysis_chain
from farm_audio.encode import Output
from farm_audio.render import MEASURED, whole_file_filter

from farm.project import load_project

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_projects" / "podcast"


def make_input(folder: Path, minutes: float, fmt: str) -> Path:
    """The sample's source looped to ``minutes`` minutes, encoded as ``fmt``."""
    codec = {  # as a typical file of each kind: 16-bit FLAC in 4096-sample blocks, speech-rate Opus
        "flac": ["-c:a", "flac", "-sample_fmt", "s16", "-frame_size", "4096"],
        "opus": ["-c:a", "libopus", "-b:a", "20k"],
        "wav": ["-c:a", "pcm_s16le"],
    }
    target = folder / f"source.{fmt}"
    loops = int(minutes * 60 / 180) + 1
    ffmpeg.run(["-y", "-stream_loop", str(loops), "-i", str(SAMPLE / "source.opus"), "-t", f"{minutes * 60}",
                *codec[fmt], *ffmpeg.BITEXACT, str(target)])
    return target


def make_project(folder: Path, source: Path, segment: float | None, loudnorm: bool) -> Path:
    """The podcast sample's settings on ``source``; without its loudnorm if asked."""
    audio = tomllib.loads((SAMPLE / "farm.toml").read_text())["audio"]
    filters = parse_chain(audio["filters"])
    if not loudnorm:
        filters = [f for f in filters if f.name != "loudnorm"]
    folder.mkdir()
    shutil.copy(source, folder / source.name)
    (folder / "farm.toml").write_text(
        f'[project]\nname = "bench"\nmedia_type = "audio"\n\n[audio]\ninput = "{source.name}"\n'
        f"filters = {json.dumps(chain_text(filters))}\n" + (f"segment = {segment}\n" if segment else "")
        + f"outputs = {json.dumps(audio['outputs'])}\nname = {json.dumps(audio['name'])}\n"
    )
    return folder


def single_ffmpeg(project_dir: Path, out: Path) -> tuple[float, float, dict[str, str] | None]:
    """One ffmpeg over the whole file (two for loudnorm's two passes).

    Returns (seconds, seconds of loudnorm's first pass (0 without), measurements).
    """
    settings = load_project(project_dir).settings
    source = str(project_dir / settings["input"])
    out.mkdir()
    started = time.perf_counter()
    measured, first_pass_s = None, 0.0
    if settings["loudnorm"] is not None:
        chain = analysis_chain(parse_chain(settings["filters"]), settings["loudnorm"])
        proc = ffmpeg.run(["-nostats", "-loglevel", "info", "-i", source, "-map", "0:a:0",
                           "-af", f"aformat=sample_fmts=dbl,{chain}", "-f", "null", "-"], quiet=False)
        text = proc.stderr.decode()
        found = re.findall(r"\{[^{}]*\"input_i\"[^{}]*\}", text)
        first = json.loads(found[-1])
        measured = {k: first[k] for k in MEASURED}
    first_pass_s = time.perf_counter() - started
    outputs = [Output.from_wire(o) for o in settings["outputs"]]
    labels = "".join(f"[o{i}]" for i in range(len(outputs)))
    graph = f"[0:a:0]{whole_file_filter(settings, measured)},asplit={len(outputs)}{labels}"
    args = ["-y", "-i", source, "-filter_complex", graph]
    for i, o in enumerate(outputs):
        args += ["-map", f"[o{i}]", *o.args, *ffmpeg.BITEXACT, str(out / f"{settings['name']}.{o.extension}")]
    ffmpeg.run(args)
    return time.perf_counter() - started, first_pass_s if measured else 0.0, measured


def cpu_seconds() -> float:
    """User + system seconds of this process and of every child it has waited for (with theirs)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def difference(farm: Path, single: Path, rate: int) -> str:
    """How two encodes differ once decoded: samples that differ and where (bytes alone say little)."""
    a, b = (array.array("f", ffmpeg.run(["-i", str(p), "-f", "f32le", "-"]).stdout) for p in (farm, single))
    if len(a) != len(b):
        return f"{farm.name}: {len(a)} vs {len(b)} samples"
    where = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if not where:
        return f"{farm.name}: bytes differ, decoded samples equal"
    largest = max(abs(a[i] - b[i]) for i in where)
    return (f"{farm.name}: {len(where)} decoded samples differ (max {largest:.1e}), "
            f"{where[0] / rate:.2f}-{where[-1] / rate:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--segment", type=float, default=None,
                        help="seconds per job (default: the media type's)")
    parser.add_argument("--format", choices=("flac", "opus", "wav"), default="flac")
    parser.add_argument("--variants", default="sample,no-loudnorm",
                        help="sample: the podcast chain; no-loudnorm: without its serial analysis pass")
    parser.add_argument("--json", action="store_true", help="one JSON object per comparison on stdout")
    args = parser.parse_args()
    say = (lambda *a, **k: print(*a, **k, file=sys.stderr)) if args.json else print
    try:
        from farm.embedded import submit_embedded
    except ImportError:
        sys.exit("farm.embedded is not available: this benchmark needs the embedded farm")

    segment = f"{args.segment:g} s" if args.segment else "default"
    say(f"# audio: {args.minutes:g} min podcast chain, {args.agents} agents, {segment} segments; {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        source = make_input(root, args.minutes, args.format)
        say(f"# input: {source.name}, {source.stat().st_size / 1e6:.1f} MB, made in "
              f"{time.perf_counter() - started:.1f} s")
        for variant in args.variants.split(","):
            project = make_project(root / variant, source, args.segment, loudnorm=variant == "sample")
            load_before = os.getloadavg()[0]
            cpu_before = cpu_seconds()
            single_s, first_pass_s, measured = single_ffmpeg(project, root / f"{variant}-single")
            single_cpu = cpu_seconds() - cpu_before
            started = time.perf_counter()
            summary = submit_embedded(project, agents=args.agents)
            farm_s = time.perf_counter() - started
            farm_cpu = cpu_seconds() - cpu_before - single_cpu
            load_after = os.getloadavg()[0]
            if not summary.ok:
                say(f"# {variant}: the farm failed: {summary.failures[:3] or summary.error}")
                return 1
            settings = load_project(project).settings
            names = [f"{settings['name']}.{o['extension']}" for o in settings["outputs"]]
            single = root / f"{variant}-single"
            differ = [n for n in names if (project / "output" / n).read_bytes() != (single / n).read_bytes()]
            what = "podcast chain" if variant == "sample" else "chain without loudnorm"
            if args.json:
                print(json.dumps({
                    "name": f"audio {variant}", "farm_s": round(farm_s, 3),
                    "baseline_s": round(single_s, 3), "baseline_first_pass_s": round(first_pass_s, 3),
                    "speedup": round(single_s / farm_s, 3), "jobs": summary.total, "minutes": args.minutes,
                    "baseline_cpu_s": round(single_cpu, 2), "farm_cpu_s": round(farm_cpu, 2),
                    "agents": args.agents, "segment_s": settings["segment"] / settings["sample_rate"],
                    "identical": not differ, "differ": differ,
                    "load_before": round(load_before, 2), "load_after": round(load_after, 2),
                }), flush=True)
            else:
                figure = f"{farm_s:.1f} s ({summary.total} jobs, run {summary.elapsed_s:.1f} s)"
                report(f"{what}, wall", figure, f"{single_s:.1f} s (one ffmpeg)", ratio=single_s / farm_s)
            verdict = f"NO ({', '.join(differ)})" if differ else "yes"
            seconds = args.minutes * 60
            say(f"#   load average {load_before:.2f} before the baseline, {load_after:.2f} after the farm")
            say(f"#   CPU (user + system): one ffmpeg {single_cpu:.1f} s, the farm {farm_cpu:.1f} s "
                "(its processes that ended in the run)")
            if measured is not None:
                say(f"#   one ffmpeg: loudnorm's first pass {first_pass_s:.1f} s, "
                    f"the second {single_s - first_pass_s:.1f} s")
            say(f"#   outputs byte-identical to the single ffmpeg run: {verdict} of {', '.join(names)}; "
                  f"farm {seconds / farm_s:.0f}x real time, ffmpeg {seconds / single_s:.0f}x")
            for n in differ:
                rate = 48000 if n.endswith(".opus") else settings["sample_rate"]
                say(f"#     {difference(project / 'output' / n, single / n, rate)}")
            if measured is not None:
                analysis = json.loads((project / "output" / f"{settings['name']}.loudnorm.json").read_text())
                same = {k: analysis[k] for k in MEASURED} == measured
                say(f"#   loudnorm analysis equals the single run's first pass: {'yes' if same else 'NO'} "
                      f"({measured})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
