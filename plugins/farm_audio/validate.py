"""Checking a filter chain before any job runs, by running ffmpeg on a short generated signal.

Beyond ffmpeg accepting it, a chain must keep time: sample N of its output belongs to
sample N of its input, with at most a fixed tail after the end. Only then can the
audio be cut into sample ranges and joined again. Rate changes, tempo changes,
trims and endless padding are refused here, with ffmpeg's own words where it has any.
"""

from __future__ import annotations

import array
import math
import sys
from dataclasses import dataclass

from farm_audio import ffmpeg
from farm_audio.probe import ProbeError, layout_channels, parse_framecrc

#: generated test lengths: two residues against common frame sizes (1024, 4096, 100 ms)
_PROBE_SECONDS = (0.25, 0.5)
_PROBE_ODD = (1, 37)
#: output beyond the input longer than this is "endless" (apad, aloop)
MAX_TAIL_SECONDS = 60.0
#: a tone with a slow swell and a gap, so gates and compressors see level changes
_SIGNAL = "0.4*sin(2*PI*440*t)*(0.6+0.4*sin(2*PI*3*t))*gt(mod(t,0.2),0.05)"


class ChainError(ValueError):
    pass


@dataclass(frozen=True)
class ChainShape:
    layout: str  # the chain's output channel layout
    channels: int
    tail: int  # samples the chain adds after the end of its input


def probe_input(sample_rate: int, layout: str, samples: int) -> list[str]:
    """ffmpeg input options for ``samples`` samples of the test signal."""
    seconds = samples / sample_rate + 0.1
    src = f"aevalsrc=exprs='{_SIGNAL}':s={sample_rate}:c={layout}:d={seconds:.6f}"
    return ["-f", "lavfi", "-i", src]


def run_chain(chain: str, sample_rate: int, layout: str, samples: int) -> tuple[int, int, str]:
    """Run ``chain`` over ``samples`` generated samples: (output samples, output rate, output layout)."""
    cap = samples + int(MAX_TAIL_SECONDS * sample_rate)
    graph = f"atrim=end_sample={samples},aformat=sample_fmts=dbl"
    graph += f",{chain}" if chain else ""
    graph += f",atrim=end_sample={cap}"
    try:
        proc = ffmpeg.run([*probe_input(sample_rate, layout, samples), "-af", graph,
                           "-c:a", "pcm_s16le", "-f", "framecrc", "-"], timeout=120)
    except ffmpeg.FfmpegFailed as exc:
        raise ChainError(f"ffmpeg rejected it: {exc.message}") from None
    measured = parse_framecrc(proc.stdout.decode("ascii", "replace"))
    return measured.samples, measured.sample_rate, measured.layout


def check_finite_output(chain: str, sample_rate: int, layout: str, samples: int) -> None:
    """Raise `ChainError` if ``chain`` turns the test signal into samples that are not finite
    (an expression that divides by zero, a gain of 1e999): as PCM they come out as silence
    with ffmpeg's exit 0, so the run would deliver silent audio and say it went well.

    Silence alone is not refused: a fade-in, a delay or a gate silences the check's quarter
    second on purpose (`volume=0` is silence asked for)."""
    # capped (a second of tail at most): an endless chain (apad) must not fill memory here
    cap = samples + sample_rate
    graph = f"atrim=end_sample={samples},aformat=sample_fmts=dbl,{chain},atrim=end_sample={cap}"
    try:
        proc = ffmpeg.run([*probe_input(sample_rate, layout, samples), "-af", graph,
                           "-c:a", "pcm_f64le", "-f", "f64le", "-"], timeout=120)
    except ffmpeg.FfmpegFailed as exc:
        raise ChainError(f"ffmpeg rejected it: {exc.message}") from None
    out = array.array("d")
    out.frombytes(proc.stdout[:len(proc.stdout) // 8 * 8])
    if sys.byteorder != "little":
        out.byteswap()
    bad = sum(1 for x in out if not math.isfinite(x))
    if bad:
        raise ChainError(f"it makes {bad} of {len(out)} samples of a test tone infinite or not a number "
                         "(a gain or expression that is not finite): the output would be silence or noise")


def check_chain(chain: str, sample_rate: int, layout: str) -> ChainShape:
    """Raise `ChainError` unless ``chain`` keeps time and makes finite samples; return its
    output layout and tail."""
    tails = []
    out_layout = layout
    for seconds, odd in zip(_PROBE_SECONDS, _PROBE_ODD, strict=True):
        samples = int(seconds * sample_rate) + odd
        got, rate, out_layout = run_chain(chain, sample_rate, layout, samples)
        if rate != sample_rate:
            raise ChainError(
                f"it changes the sample rate from {sample_rate} to {rate} Hz; "
                "set [audio] sample_rate instead so the whole project runs at one rate"
            )
        if got >= samples + int(MAX_TAIL_SECONDS * sample_rate):
            raise ChainError(f"its output does not end (more than {MAX_TAIL_SECONDS:g} s after the input)")
        if got < samples:
            raise ChainError(
                f"it shortens the audio ({samples} samples in, {got} out): filters that change "
                "tempo, trim or drop silence cannot run on segments"
            )
        tails.append(got - samples)
    if tails[0] != tails[1]:
        raise ChainError(
            f"its output length does not follow its input's (a tail of {tails[0]} then {tails[1]} samples): "
            "it cannot run on segments"
        )
    if chain:  # after the checks above: it keeps time, so its output is as long as the tone
        check_finite_output(chain, sample_rate, layout, int(_PROBE_SECONDS[0] * sample_rate))
    try:
        channels = layout_channels(out_layout)
    except ProbeError as exc:
        raise ChainError(str(exc)) from None
    return ChainShape(layout=out_layout, channels=channels, tail=tails[0])


def check_runs(chain: str, sample_rate: int, layout: str) -> None:
    """Only that ffmpeg accepts ``chain`` (for forms whose shape is checked elsewhere)."""
    samples = int(0.25 * sample_rate)
    try:
        graph = f"atrim=end_sample={samples},aformat=sample_fmts=dbl,{chain}"
        ffmpeg.run([*probe_input(sample_rate, layout, samples), "-af", graph, "-f", "null", "-"], timeout=120)
    except ffmpeg.FfmpegFailed as exc:
        raise ChainError(f"ffmpeg rejected it: {exc.message}") from None
