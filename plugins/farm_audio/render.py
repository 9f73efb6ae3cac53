"""What a job does on a render node: one segment of PCM, or the loudness analysis.

A segment job feeds its sample range plus lead-in (and lead-out) of the decoded
source to ffmpeg, runs ``aformat=sample_fmts=dbl`` and the chain, and keeps exactly
its own range with ``atrim`` counted in samples. Timestamps are shifted to the
range's true position first, so filters that look at time (afade, volume
expressions) behave as they would over the whole file. Nothing is encoded here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from farm.errors import RenderError
from farm.proc import child_dies_with_parent
from farm_audio import ffmpeg
from farm_audio.chain import DOUBLE, parse_chain, pinned_text
from farm_audio.loudnorm import (
    MEASURED,
    analysis_chain,
    constant_gain,
    figure,
    linear_chain,
    linear_loudnorm,
    measurement_problem,
)
from farm_audio.probe import RAW_BYTES
from farm_audio.segments import Segment
from farm_audio.source import InPlace, Source

log = logging.getLogger(__name__)

ANALYSIS_KEY = "loudnorm-analysis"
#: raw PCM format -> the sample format name aformat takes
_SAMPLE_FMT = {"u8": "u8", "s16le": "s16", "s32le": "s32", "f32le": "flt", "f64le": "dbl"}
#: loudnorm treats an input shorter than 3 s as linear whatever it measured, so probe longer
_PROBE_SECONDS = 4
_JSON_BLOCK = re.compile(r"\{[^{}]*\"input_i\"[^{}]*\}", re.S)


def segment_filter(
    settings: Mapping[str, Any], seg: Segment, deps: Mapping[str, Any], *,
    shift: bool = True, pcm: bool = True,
) -> str:
    """The filter a segment job runs over its read range.

    ``shift``: the range arrives stamped from 0 (raw PCM on stdin), so its timestamps are
    moved to its true place; an in-place read keeps the file's own, already true.
    ``pcm``: end in the ``pcm`` setting's sample format (else the chain's doubles).
    """
    keep_tail = seg.last and settings["tail"]
    trim = f"atrim=start_sample={seg.start - seg.read_start}"
    if not keep_tail:
        trim += f":end_sample={seg.end - seg.read_start}"
    parts = [
        DOUBLE,
        f"asetpts=PTS+{seg.read_start}/(SR*TB)" if shift else "",
        chain_for_segments(settings, deps),
        trim,
        f"aformat=sample_fmts={_SAMPLE_FMT[settings['pcm']]}" if pcm else "",
    ]
    return ",".join(p for p in parts if p)


def segment_graph(settings: Mapping[str, Any], seg: Segment, deps: Mapping[str, Any], *, shift: bool) -> str:
    """The filter graph of a segment job: the chain once, then one labelled output ``[oN]`` per stream.

    Each stream (`farm_audio.encode.segment_streams`) converts the chain's doubles to its
    own sample format, as the encoders it feeds would.
    """
    streams = settings["streams"]
    chain = segment_filter(settings, seg, deps, shift=shift, pcm=False)
    if len(streams) == 1:
        return f"{chain},aformat=sample_fmts={_SAMPLE_FMT[streams[0]]}[o0]"
    split = "".join(f"[s{i}]" for i in range(len(streams)))
    return ";".join([f"{chain},asplit={len(streams)}{split}",
                     *(f"[s{i}]aformat=sample_fmts={_SAMPLE_FMT[f]}[o{i}]" for i, f in enumerate(streams))])


def chain_for_segments(settings: Mapping[str, Any], deps: Mapping[str, Any]) -> str:
    """The project's chain as a segment runs it, pinned to doubles.

    loudnorm (if any) runs as its linear second pass, with the analysis from ``deps``;
    when the encoders apply that gain (``gain_at_encode``) the segments stop before it.
    """
    filters = parse_chain(settings["filters"])
    index = settings["loudnorm"]
    if index is not None and settings.get("gain_at_encode"):
        return pinned_text(filters[:index])
    if index is not None:
        measured = deps.get(ANALYSIS_KEY)
        if not measured:
            raise RenderError("this segment needs the loudness analysis, and its result did not arrive")
        filters = parse_chain(linear_chain(filters, index, measured))
    return pinned_text(filters)


def encode_filter(settings: Mapping[str, Any], measured: Mapping[str, str]) -> str:
    """What each encoder runs over the joined doubles when it applies loudnorm's gain ("" otherwise)."""
    index = settings["loudnorm"]
    if index is None or not settings.get("gain_at_encode"):
        return ""
    second = linear_loudnorm(parse_chain(settings["filters"])[index], {k: measured[k] for k in MEASURED})
    return f"{DOUBLE},{pinned_text([second])}"


def whole_file_filter(settings: Mapping[str, Any], measured: Mapping[str, str] | None = None) -> str:
    """The ``-af`` of the single whole-file ffmpeg run whose output the farm reproduces."""
    filters = parse_chain(settings["filters"])
    index = settings["loudnorm"]
    if index is not None:
        if not measured:
            raise RenderError("the whole-file chain needs the loudness analysis")
        filters = parse_chain(linear_chain(filters, index, dict(measured)))
    return ",".join(p for p in (settings["convert"] or DOUBLE, pinned_text(filters)) if p)


def run_fed(
    graph: str, args: list[str], source: Source | InPlace, start: int, end: int, log_path: Path,
    loglevel: str = "error", progress: Callable[[float], None] | None = None,
) -> None:
    """Run ffmpeg's filter ``graph`` over samples ``[start, end)`` of ``source``; ``args`` take its outputs.

    An in-place read puts its exact cut before the graph. From a decoded source, the
    samples go raw on ffmpeg's stdin; ``progress`` hears the fraction fed so far (ffmpeg
    reads as fast as it filters). An in-place read reports only its end.
    """
    head = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", loglevel, "-y"]
    if isinstance(source, InPlace):
        inputs, trim = source.input_args(start, end)
        complex_graph = f"[0:a:0]{trim + ',' if trim else ''}{graph}"
        _run_in_place([*head, *inputs, "-filter_complex", complex_graph, *args], log_path)
        if progress is not None:
            progress(1.0)
        return
    cmd = [*head, *source.input_args(), "-i", "pipe:0", "-filter_complex", f"[0:a:0]{graph}", *args]
    log.debug("running %s", " ".join(cmd))
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=child_dies_with_parent())
        assert proc.stdin is not None
        total = max(1, (end - start) * source.frame_bytes)
        try:
            source.feed(proc.stdin.fileno(), start, end,
                        None if progress is None else (lambda sent: progress(sent / total)))
        except BrokenPipeError:  # ffmpeg stopped reading: its exit code and log say why
            pass
        except RenderError:
            proc.kill()
            proc.wait()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        code = proc.wait()
    if code != 0:
        text = log_path.read_text("utf-8", "replace")
        raise RenderError(f"ffmpeg failed: {ffmpeg.last_lines(text)}")


def _run_in_place(cmd: list[str], log_path: Path) -> None:
    log.debug("running %s", " ".join(cmd))
    with open(log_path, "wb") as err:
        code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                              preexec_fn=child_dies_with_parent()).returncode
    if code != 0:
        raise RenderError(f"ffmpeg failed: {ffmpeg.last_lines(log_path.read_text('utf-8', 'replace'))}")


def render_segment(
    settings: Mapping[str, Any], seg: Segment, source: Source | InPlace, out_dir: Path, work_dir: Path,
    deps: Mapping[str, Any], progress: Callable[[float], None] | None = None,
) -> dict[str, int]:
    """Render one segment to raw PCM in ``out_dir`` (`segment_files`); returns where it goes, its length."""
    graph = segment_graph(settings, seg, deps, shift=not isinstance(source, InPlace))
    paths = segment_files(settings, seg, out_dir)
    args = []
    for i, (fmt, path) in enumerate(zip(settings["streams"], paths, strict=True)):
        args += ["-map", f"[o{i}]", "-f", fmt, ffmpeg.file_arg(path)]
    run_fed(graph, args, source, seg.read_start, seg.read_end, work_dir / "ffmpeg.log", progress=progress)
    found = set()
    for fmt, path in zip(settings["streams"], paths, strict=True):
        frame = RAW_BYTES[fmt] * settings["out_channels"]
        size = path.stat().st_size if path.exists() else 0
        samples, rest = divmod(size, frame)
        open_end = seg.last and settings["tail"]
        if rest or samples < seg.samples or (samples != seg.samples and not open_end):
            raise RenderError(
                f"{seg.key}: ffmpeg produced {size} bytes ({samples} samples) of {fmt}, expected "
                f"{seg.samples} samples ({seg.start}-{seg.end}); the chain does not keep time on this input"
            )
        found.add(samples)
    if len(found) != 1:
        raise RenderError(f"{seg.key}: ffmpeg's streams differ in length ({sorted(found)} samples)")
    return {"index": seg.index, "start": seg.start, "samples": found.pop()}


def segment_files(settings: Mapping[str, Any], seg: Segment, out_dir: Path) -> list[Path]:
    """A segment's PCM files, one per stream, named by its key and the stream's format."""
    return [out_dir / f"{seg.key}.{fmt}" for fmt in settings["streams"]]


def analyse_loudness(
    settings: Mapping[str, Any], source: Source | InPlace, work_dir: Path,
    progress: Callable[[float], None] | None = None,
) -> dict[str, str]:
    """loudnorm's first pass over the whole file (through the chain before it): its measurements."""
    chain = analysis_chain(parse_chain(settings["filters"]), settings["loudnorm"])
    log_path = work_dir / "loudnorm.log"
    # loudnorm prints its measurements at the info level
    run_fed(f"{DOUBLE},{chain}", ["-f", "null", "-"], source, 0, source.samples, log_path, loglevel="info",
            progress=progress)
    blocks = _JSON_BLOCK.findall(log_path.read_text("utf-8", "replace"))
    if not blocks:
        raise RenderError("loudnorm printed no measurements")
    first_pass = json.loads(blocks[-1])
    # Only what the second pass needs; the first pass's own output figures describe its dynamic mode.
    measured = {k: str(first_pass[k]) for k in MEASURED}
    problem = measurement_problem(measured, parse_chain(settings["filters"]), settings["loudnorm"])
    if problem:
        raise RenderError(problem)
    check_linear(settings, measured)
    return {**measured, "second_pass": "linear"}


def check_linear(settings: Mapping[str, Any], measured: Mapping[str, str]) -> None:
    """The second pass must be loudnorm's linear mode (a constant gain), or it cannot run on segments.

    loudnorm picks linear mode when it starts, from the measurements and the targets
    alone (the true peak after the gain must stay under TP, the loudness range under
    LRA); otherwise it silently runs its dynamic mode. One run on a few seconds of
    silence tells which this ffmpeg picks.
    """
    first = parse_chain(settings["filters"])[settings["loudnorm"]]
    probe_filter = linear_loudnorm(first, dict(measured), print_format="json").text()
    rate = settings["sample_rate"]
    try:
        proc = ffmpeg.run(
            ["-nostats", "-loglevel", "info", "-f", "lavfi",
             "-i", f"anullsrc=r={rate}:cl=mono:d={_PROBE_SECONDS}",
             "-af", f"{DOUBLE},{probe_filter}", "-f", "null", "-"],
            quiet=False,
        )
    except ffmpeg.FfmpegFailed as exc:
        raise RenderError(f"loudnorm's second pass does not start: {exc.message}") from None
    blocks = _JSON_BLOCK.findall(proc.stderr.decode("utf-8", "replace"))
    kind = json.loads(blocks[-1]).get("normalization_type") if blocks else None
    if kind == "linear":
        return
    if figure(measured["input_lra"]) == 0:  # loudnorm reads a range of 0 as "not measured"
        raise RenderError(
            f"loudnorm cannot use its linear mode (a constant gain) for this audio: it measures "
            f"{measured['input_i']} LUFS with a loudness range of 0 LU (shorter than loudnorm's 3 s "
            "window, or of constant loudness); loudnorm takes a range of 0 as not measured and then "
            "always runs its dynamic mode, which needs the whole file in one run. The same constant "
            f"gain: {constant_gain(first, measured).source()} in place of loudnorm in [audio] filters"
        )
    raise RenderError(
        "loudnorm cannot use its linear mode (a constant gain) for this audio: measured "
        f"{measured['input_i']} LUFS, true peak {measured['input_tp']} dBTP, loudness range "
        f"{measured['input_lra']} LU, so the gain to reach I would push the true peak over TP, or the "
        "range is over LRA. Its dynamic mode needs the whole file in one run: lower I, raise TP or LRA, "
        "or put a limiter before loudnorm in [audio] filters"
    )
