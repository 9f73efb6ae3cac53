"""Does a chain split? Run it in segments and whole on a generated signal, and compare.

Filters with memory or look-ahead across a join (``adeclick``, ``afftdn``, ``speechnorm``,
``dynaudnorm``, frame-based ``volume`` expressions, ...) give different audio near the
joins unless the lead-in and lead-out cover what they remember. No table of filters
can know them all, so at load the project's chain runs over a few seconds of a
generated signal twice: once whole, and once as the segment jobs would run it (the
real `plan` and `segment_filter`, fed raw PCM on stdin like a render node). A chain
whose segments differ from the whole run by more than `TOLERANCE` does not split;
the project then runs the whole file as one job, with the reason logged.

Verdicts are kept per chain, format and lead-in, in the process and on disk
(`farm_audio.verdicts`), so reloading a project, in this process or another, is cheap.
"""

from __future__ import annotations

import array
import logging
import subprocess
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from farm.proc import child_dies_with_parent
from farm_audio import ffmpeg, verdicts
from farm_audio.chain import DOUBLE, pinned_text
from farm_audio.chain import parse_chain as _parse
from farm_audio.probe import RAW_BYTES
from farm_audio.render import segment_filter
from farm_audio.segments import READ_ALIGN, Segment, plan

log = logging.getLogger(__name__)

#: largest difference (of a full scale of 1.0) still "equal": recursive filters restarted
#: from another state differ by ~1e-14 in doubles (see docs), far below a 24-bit step (6e-8)
TOLERANCE = 1e-9
#: test segment length: short, so the test crosses joins within a few seconds
TEST_SEGMENT_S = 0.5
#: the longest test signal; a lead-in needing more is not checked, and runs whole-file
MAX_CHECK_S = 90.0
_CACHE_SIZE = 256
_cache: OrderedDict[tuple[Any, ...], Verdict] = OrderedDict()


@dataclass(frozen=True)
class Verdict:
    splits: bool
    reason: str = ""  # why it does not, in words for the user


def _signal(channels: int) -> str:
    """Per channel: a gated tone, a chirp, clicks and noise (aevalsrc's seeded ``random``).

    Level steps move compressors and normalisers, clicks wake declickers, noise feeds
    denoisers and the chirp sweeps equalisers' bands; no two channels are equal.
    """
    exprs = [
        f"0.4*sin(2*PI*{300 + 70 * c}*t)*(0.25+0.75*gt(mod(t+{0.13 * c:.2f},0.7),0.35))"
        f"+0.05*sin(2*PI*(60+900*t)*t)"
        f"+0.3*eq(mod(n+{997 * c},9973),0)"
        f"+0.04*(2*random({c})-1)"
        for c in range(channels)
    ]
    return "|".join(exprs)


def _generate(settings: Mapping[str, Any], samples: int) -> bytes:
    rate, raw = settings["sample_rate"], settings["raw"]
    src = (f"aevalsrc=exprs='{_signal(settings['channels'])}':s={rate}:c={settings['layout']}"
           f":d={samples / rate + 0.1:.6f}")
    proc = ffmpeg.run(["-f", "lavfi", "-i", src, "-af", f"atrim=end_sample={samples}", "-f", raw, "-"],
                      timeout=120)
    return proc.stdout


def _run(settings: Mapping[str, Any], graph: str, data: bytes) -> array.array:
    """``graph`` over raw PCM ``data`` (as a render node feeds it): the output as doubles."""
    cmd = [ffmpeg.ffmpeg_exe(), *ffmpeg.QUIET, "-f", settings["raw"], "-ar", str(settings["sample_rate"]),
           "-ch_layout", settings["layout"], "-i", "pipe:0", "-af", graph, "-f", "f64le", "pipe:1"]
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=120, check=False,
                          preexec_fn=child_dies_with_parent())
    if proc.returncode != 0:
        raise ffmpeg.FfmpegFailed(cmd, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    out = array.array("d")
    out.frombytes(proc.stdout[: len(proc.stdout) // 8 * 8])
    return out


def _tested(segments: list[Segment]) -> list[Segment]:
    """The first segment, the first two that read from a true mid-file start, and the last."""
    inner = [s for s in segments if s.read_start > 0]
    chosen = {segments[0].index, segments[-1].index, *(s.index for s in inner[:2])}
    return [s for s in segments if s.index in chosen]


def check_split(settings: Mapping[str, Any], chain: str) -> tuple[Verdict, bool]:
    """Whether ``chain`` (farm's one-level text, with loudnorm's linear pass as ``anull``)
    run in segments equals one whole run, with ``settings``' format, lead-in and lead-out.

    ``settings`` needs ``sample_rate``, ``layout``, ``channels``, ``raw``, ``out_channels``,
    ``segment``, ``lead_in``, ``lead_out`` (samples). Cached per chain and those values;
    the second value says whether this process had it already (so a warning is given once per
    process, even when the verdict came from disk).
    """
    rate = settings["sample_rate"]
    seg_len = max(READ_ALIGN, min(settings["segment"], round(TEST_SEGMENT_S * rate)))
    lead_in, lead_out = settings["lead_in"], settings["lead_out"]
    key = (ffmpeg.ffmpeg_exe(), chain, rate, settings["layout"], settings["raw"], seg_len, lead_in, lead_out)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key], True
    stored = verdicts.load(key[0], key[1:]) or {}  # another process (controller, worker) found it out
    if isinstance(stored.get("splits"), bool) and isinstance(stored.get("reason"), str):
        verdict = Verdict(stored["splits"], stored["reason"])
    else:
        verdict = _compare(settings, chain, seg_len)
        verdicts.store(key[0], key[1:], {"splits": verdict.splits, "reason": verdict.reason})
    _cache[key] = verdict
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return verdict, False


def _compare(settings: Mapping[str, Any], chain: str, seg_len: int) -> Verdict:
    rate, lead_in, lead_out = settings["sample_rate"], settings["lead_in"], settings["lead_out"]
    # enough segments that two start past the lead-in, and a short last one (an odd length)
    first_inner = (lead_in + READ_ALIGN) // seg_len + 1
    samples = (first_inner + 2) * seg_len + lead_out + 37
    if samples > MAX_CHECK_S * rate:
        return Verdict(False, f"its lead-in and lead-out ({(lead_in + lead_out) / rate:.1f} s) are too long "
                              "to check against a whole-file run")
    segments = list(plan(samples, seg_len, lead_in, lead_out))
    job_settings = {"filters": chain, "loudnorm": None, "tail": True, "pcm": "f64le"}
    channels = settings["out_channels"]
    try:
        data = _generate(settings, samples)
        frame = RAW_BYTES[settings["raw"]] * settings["channels"]
        whole = _run(settings, ",".join(p for p in (DOUBLE, pinned_text(_parse(chain))) if p), data)
        for seg in _tested(segments):
            part = _run(settings, segment_filter(job_settings, seg, {}), data[seg.read_start * frame:
                                                                             seg.read_end * frame])
            expected = whole[seg.start * channels: None if seg.last else seg.end * channels]
            problem = _difference(part, expected, seg, channels, rate)
            if problem:
                return Verdict(False, f"{problem} (a generated signal in {seg_len / rate:g} s segments, "
                                      f"lead-in {lead_in / rate:g} s, lead-out {lead_out / rate:g} s)")
    except (ffmpeg.FfmpegFailed, subprocess.TimeoutExpired) as exc:
        message = exc.message if isinstance(exc, ffmpeg.FfmpegFailed) else "ffmpeg took too long"
        return Verdict(False, f"its split run failed where a whole run did not: {message}")
    return Verdict(True)


def _difference(got: array.array, want: array.array, seg: Segment, channels: int, rate: int) -> str | None:
    if len(got) != len(want):
        return (f"a segment gave {len(got) // channels} samples where the whole-file run has "
                f"{len(want) // channels} for the same range")
    worst, where = 0.0, -1
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if abs(a - b) > worst:
            worst, where = abs(a - b), i
    if worst <= TOLERANCE:
        return None
    at = seg.start + where // channels
    return (f"its segments differ from one whole-file run by up to {worst:.3g} (full scale 1), "
            f"at {at / rate:.4f} s in the segment {seg.start / rate:g}-{seg.end / rate:g} s")
