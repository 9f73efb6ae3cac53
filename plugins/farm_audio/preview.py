"""The audio live preview: the waveform of the segments joined so far (see `farm.preview`).

`collate` writes each segment's PCM at its offset into one join file and appends its range
to a side file (`farm_audio.join`). The preview reads only ranges it has not seen (kept in
the context's cache), each once, and folds them into `BUCKETS` (min, max) peaks over the
whole length: bounded memory, a bounded read per call, and at most `LOOK` samples examined
per bucket and segment. Once the run is encoded the join is removed: the peaks of what
was not read by then come from one measured decode of an encoded output (`_from_output`).
"""

from __future__ import annotations

import array
import json
import math
import subprocess
import sys
from typing import IO, Any

from farm.preview import PreviewContext, opened
from farm_audio import encode, ffmpeg
from farm_audio.chain import parse_chain
from farm_audio.loudnorm import figure

BUCKETS = 600
LOOK = 4096  # samples examined per bucket in one segment: a stride beyond that
READ_PER_CALL = 64 << 20  # bytes of new PCM read per call at most; the rest on the next
CHUNK = 1 << 20
DECODE_TIMEOUT_S = 20.0  # an encoded output's peaks, measured once per run after the join is removed
LOSSLESS = ("flac", "wav")
#: raw PCM format -> (array type code, offset, scale) so that (value - offset) / scale is in -1..1
FORMATS = {"u8": ("B", 128, 128.0), "s16le": ("h", 0, 32768.0), "s32le": ("i", 0, 2147483648.0),
           "f32le": ("f", 0, 1.0), "f64le": ("d", 0, 1.0)}


def describe(ctx: PreviewContext, join_name: str, fingerprint: str) -> dict[str, Any]:
    """The ``waveform`` description from the join file ``join_name`` (in the output folder)
    whose side file starts with ``fingerprint`` (the run's settings; another run's is ignored)."""
    s = ctx.settings
    rate, total = s["sample_rate"], max(1, s["samples"])
    state = ctx.cache.setdefault("waveform", {"seen": set(), "lo": [math.inf] * BUCKETS,
                                               "hi": [-math.inf] * BUCKETS, "joined": 0})
    budget = READ_PER_CALL
    with opened(ctx, join_name) as pcm:
        for start, count in _ranges(ctx, join_name + ".ranges", fingerprint):
            if budget <= 0 or pcm is None:
                break
            if (start, count) in state["seen"]:
                continue
            if not _fold(pcm, start, count, s, total, state):
                continue  # shorter than its range says (being rewritten): read again next time
            state["seen"].add((start, count))
            state["joined"] += count
            budget -= count * _frame(s)
    if pcm is None and state["joined"] < total and not state.get("decoded"):
        _from_output(ctx, state)  # the join is gone once encoded: read the output once
    gain = 1.0 if state.get("decoded") else _encoders_gain(ctx, fingerprint, state)  # a decoded output has it
    peaks = [None if lo > hi else [round(max(-1.0, lo * gain), 3), round(min(1.0, hi * gain), 3)]
             for lo, hi in zip(state["lo"], state["hi"], strict=True)]
    return {"kind": "waveform", "peaks": peaks, "seconds": round(total / rate, 3),
            "joined_s": round(min(state["joined"], total) / rate, 3)}


def _encoders_gain(ctx: PreviewContext, fingerprint: str, state: dict[str, Any]) -> float:
    """loudnorm's linear gain where the encoders apply it (the join holds the audio before it):
    1 otherwise, and until its analysis is collated (read from the record `collate` writes)."""
    s = ctx.settings
    if s.get("loudnorm") is None or not s.get("gain_at_encode") or "gain" in state:
        return state.get("gain", 1.0)
    with opened(ctx, f".{s['name']}.loudnorm.{fingerprint}.json") as f:
        measured = json.loads(f.read(1 << 16)) if f is not None else None
    if not isinstance(measured, dict) or not isinstance(measured.get("input_i"), str):
        return 1.0
    target = parse_chain(s["filters"])[s["loudnorm"]].named().get("i", "-24")
    gain = 10 ** ((figure(target) - figure(measured["input_i"])) / 20)
    if not math.isfinite(gain):  # a figure loudnorm did not print as a number: show the join as it is
        return 1.0
    state["gain"] = gain
    return gain


def _from_output(ctx: PreviewContext, state: dict[str, Any]) -> None:
    """Peaks of this run's first encoded output (lossless first), measured by ffmpeg's astats in
    `BUCKETS` blocks: one decode at C speed, bounded by `DECODE_TIMEOUT_S`, once per run."""
    s = ctx.settings
    names = {e.name: e for e in ctx.files() if e.stat(follow_symlinks=False).st_mtime >= ctx.submitted}
    outputs = [f"{s['name']}.{encode.Output.from_wire(o).extension}" for o in s["outputs"]]
    outputs.sort(key=lambda name: name.rsplit(".", 1)[1] not in LOSSLESS)
    found = next((name for name in outputs if name in names), None)
    if found is None:
        return  # not encoded yet (or an earlier run's output): nothing to show yet
    state["decoded"] = True  # whatever happens below: a broken output is not decoded on every call
    block = max(1, -(-s["samples"] // BUCKETS))
    chain = (f"aformat=sample_fmts=flt,asetnsamples=n={block}:p=0,astats=metadata=1:reset=1:"
             "measure_perchannel=none:measure_overall=Min_level+Max_level,ametadata=mode=print:file=-")
    with opened(ctx, found) as f:
        if f is None:
            return
        try:
            cmd = [ffmpeg.ffmpeg_exe(), "-nostdin", "-v", "error", "-i", "pipe:0", "-map", "0:a:0",
                   "-af", chain, "-f", "null", "-"]
            proc = subprocess.run(cmd, stdin=f, capture_output=True, timeout=DECODE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired, ffmpeg.FfmpegMissing) as exc:
            ctx.log.warning("%s: no waveform from %s: %s", ctx.run_id, found, exc)
            return
    lo, hi = [math.inf] * BUCKETS, [-math.inf] * BUCKETS
    bucket = 0
    for line in proc.stdout.decode("ascii", "replace").splitlines():
        if line.startswith("frame:"):
            time_s = float(line.rsplit("pts_time:", 1)[-1]) if "pts_time:" in line else 0.0
            bucket = min(BUCKETS - 1, max(0, round(time_s * s["sample_rate"] / block)))  # the frame's number
        elif "Overall.Min_level=" in line or "Overall.Max_level=" in line:
            value = max(-1.0, min(1.0, float(line.rsplit("=", 1)[1])))
            if "Min_level" in line:
                lo[bucket] = min(lo[bucket], value)
            else:
                hi[bucket] = max(hi[bucket], value)
    if proc.returncode == 0:
        state.update(lo=lo, hi=hi, joined=s["samples"])
    else:
        why = ffmpeg.last_lines(proc.stderr.decode("utf-8", "replace"))
        ctx.log.warning("%s: no waveform from %s: %s", ctx.run_id, found, why)


def _frame(s: Any) -> int:
    return array.array(FORMATS[s["pcm"]][0]).itemsize * s["out_channels"]


def _ranges(ctx: PreviewContext, name: str, fingerprint: str) -> list[tuple[int, int]]:
    """(first sample, samples) of each segment joined, from the side file; a torn line is skipped."""
    with opened(ctx, name) as f:
        lines = f.read(1 << 20).decode("ascii", "replace").splitlines() if f is not None else []
    if not lines or lines[0] != fingerprint:
        return []
    found = []
    for line in lines[1:]:
        try:
            start, count = (int(v) for v in line.split())
        except ValueError:
            continue
        if start >= 0 and count > 0:
            found.append((start, count))
    return found


def _fold(pcm: IO[bytes], start: int, count: int, s: Any, total: int, state: dict[str, Any]) -> bool:
    """Fold samples ``start``..``start + count`` of the join into the peaks; False if the file
    ended first (min and max only grow, so reading a range again later is harmless)."""
    code, offset, scale = FORMATS[s["pcm"]]
    channels = s["out_channels"]
    frame = array.array(code).itemsize * channels
    per_chunk = max(1, CHUNK // frame)
    lo, hi = state["lo"], state["hi"]
    done = 0
    while done < count:
        first = start + done
        n = min(per_chunk, count - done)
        pcm.seek(first * frame)
        data = pcm.read(n * frame)
        n = len(data) // frame
        if n == 0:
            return False
        values = array.array(code, data[: n * frame])
        if sys.byteorder == "big" and values.itemsize > 1:
            values.byteswap()
        sample = first
        while sample < first + n:
            bucket = min(BUCKETS - 1, sample * BUCKETS // total)
            end = min(first + n, -(-(bucket + 1) * total // BUCKETS) if bucket < BUCKETS - 1 else first + n)
            end = max(end, sample + 1)
            a, b = (sample - first) * channels, (end - first) * channels
            part = values[a:b:max(1, (b - a) // LOOK)]
            lo[bucket] = max(-1.0, min(lo[bucket], (min(part) - offset) / scale))
            hi[bucket] = min(1.0, max(hi[bucket], (max(part) - offset) / scale))
            sample = end
        done += n
    return True
