"""loudnorm's two passes: the analysis chain, the linear second pass, and what a measurement means.

The first pass measures the audio reaching loudnorm over the whole file; the second
runs loudnorm with those figures and ``linear=true`` on every segment. ffmpeg takes
measured figures only within ranges (``measured_I`` -99 to 0 LUFS, ``measured_TP`` -99
to 99 dBTP); silence measures -inf and a hot input above 0 LUFS, and ffmpeg's own
error then speaks of parameters the user never wrote. `measurement_problem` says what
is wrong with the audio instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from farm_audio.chain import Filter, chain_text, pinned_text

#: loudnorm options the farm sets itself for its two passes
LOUDNORM_OWN = (
    "measured_i", "measured_lra", "measured_tp", "measured_thresh", "offset", "linear", "print_format",
)
#: loudnorm's first-pass figures its second pass takes
MEASURED = ("input_i", "input_tp", "input_lra", "input_thresh", "target_offset")
#: the ranges ffmpeg's loudnorm accepts for measured figures: first-pass key -> (option, low, high)
_RANGES = {
    "input_i": ("measured_I", -99.0, 0.0),
    "input_tp": ("measured_TP", -99.0, 99.0),
    "input_lra": ("measured_LRA", 0.0, 99.0),
    "input_thresh": ("measured_thresh", -99.0, 0.0),
}


def analysis_chain(filters: list[Filter], loudnorm: int) -> str:
    """The chain up to loudnorm, loudnorm printing its measurements (the first pass)."""
    first = filters[loudnorm]
    measure = Filter("loudnorm", args=[*first.named().items(), ("print_format", "json")])
    return ",".join(filter(None, (pinned_text(filters[:loudnorm]), measure.text())))


def linear_loudnorm(first: Filter, measured: dict[str, str], print_format: str = "none") -> Filter:
    """loudnorm's linear second pass: the user's targets plus the first pass's measurements."""
    own = {
        "measured_I": measured["input_i"],
        "measured_LRA": measured["input_lra"],
        "measured_TP": measured["input_tp"],
        "measured_thresh": measured["input_thresh"],
        "offset": measured["target_offset"],
        "linear": "true",
        "print_format": print_format,
    }
    return Filter("loudnorm", label=first.label, args=[*first.named().items(), *own.items()])


def gain_at_encode(filters: list[Filter], loudnorm: int | None) -> bool:
    """Whether loudnorm's second pass runs in the encoders rather than in the segments.

    With loudnorm last, its linear pass is a constant gain on the chain's last doubles:
    the encoders apply it to the joined audio, so the segments need not wait for the
    analysis and render beside it. A chain that goes on after loudnorm keeps the gain in
    the segments (the filters after it would otherwise run once per output, unsplit).
    """
    return loudnorm is not None and loudnorm == len(filters) - 1


def linear_chain(filters: list[Filter], loudnorm: int, measured: dict[str, str]) -> str:
    """The whole chain with loudnorm as its linear second pass."""
    second = linear_loudnorm(filters[loudnorm], measured)
    return chain_text([*filters[:loudnorm], second, *filters[loudnorm + 1 :]])


def figure(value: str) -> float:
    """A figure loudnorm printed ("-23.24", "-inf") as a float; NaN if it is not one."""
    try:
        return float(value)
    except ValueError:
        return math.nan


def constant_gain(first: Filter, measured: Mapping[str, str]) -> Filter:
    """The ``volume`` that takes the measured loudness to loudnorm's target ``I`` (default -24 LUFS)."""
    gain = figure(first.named().get("i", "-24")) - figure(measured["input_i"])
    return Filter("volume", args=[(None, f"{gain:.2f}dB")])


def _signed(value: str) -> str:
    """A figure as loudnorm printed it, with its sign: "+6.25"."""
    return value if value.startswith(("-", "+")) else f"+{value}"


def measurement_problem(measured: Mapping[str, str], filters: list[Filter], loudnorm: int) -> str | None:
    """What is wrong with the audio reaching loudnorm, in the user's terms, or None if it can be normalised.

    ``measured`` is the first pass's figures (strings, as loudnorm prints them).
    """
    before = chain_text(filters[:loudnorm])
    what = f"the audio reaching loudnorm (the input after {before!r})" if before else "the input"
    loudness = figure(measured["input_i"])
    if not math.isfinite(loudness) or loudness < _RANGES["input_i"][1]:
        return (
            f"{what} is silent: loudnorm measured no loudness ({measured['input_i']} LUFS; it ignores "
            "anything quieter than -70 LUFS), so there is nothing to normalise. Check that the input is the "
            "file you meant, or take loudnorm out of [audio] filters for it"
        )
    if loudness > _RANGES["input_i"][2]:
        said = (f"{what} measures {_signed(measured['input_i'])} LUFS (true peak "
                f"{_signed(measured['input_tp'])} dBTP): louder than 0 LUFS, the most loudnorm accepts as a "
                "measured input.")
        if figure(measured["input_lra"]) == 0:  # loudnorm would not run linear even once lowered
            same = [*filters[:loudnorm], constant_gain(filters[loudnorm], measured), *filters[loudnorm + 1 :]]
            return (f"{said} Its loudness range is 0 LU too, so loudnorm could not run linear anyway; "
                    f"the same constant gain: filters = \"{chain_text(same)}\"")
        # 6 dB under 0 LUFS: in range, and the gain to I is the same constant either way
        lower = Filter("volume", args=[(None, f"-{math.ceil(loudness) + 6}dB")])
        return (f"{said} Lower it before loudnorm, e.g. "
                f"filters = \"{chain_text([*filters[:loudnorm], lower, *filters[loudnorm:]])}\"")
    for key, (option, low, high) in _RANGES.items():
        value = figure(measured[key])
        if not low <= value <= high:
            return (
                f"{what} measures {key.replace('input_', '')} = {measured[key]}, outside what loudnorm "
                f"accepts as {option} ({low:g} to {high:g}): it cannot be normalised in two passes"
            )
    return None
