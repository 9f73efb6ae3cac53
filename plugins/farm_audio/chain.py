"""Reading an ffmpeg audio filter chain: its filters, their options, how much history they keep.

Only what the farm needs: the filter names (to find ``loudnorm`` and reject graphs),
a few numeric options (to size the lead-in), and a way to write a filter back.
ffmpeg itself validates the chain (see `farm_audio.validate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: the pre-roll every chain gets: IIR filters above ~100 Hz settle well within it
BASE_LEAD_IN_S = 0.1
#: time constants of state a job's lead-in must cover: after this many, a restarted
#: filter's state matches the continuous one to double precision in practice
SETTLE_TIME_CONSTANTS = 20.0

# Positional option order (ffmpeg's shorthand: options in declaration order, aliases skipped).
_BIQUAD_ORDER = ("frequency", "width_type", "width")
_POSITIONAL = {
    "aecho": ("in_gain", "out_gain", "delays", "decays"),
    "acompressor": ("level_in", "mode", "threshold", "ratio", "attack", "release"),
    "agate": ("level_in", "mode", "range", "threshold", "ratio", "attack", "release"),
    "compand": ("attacks", "decays", "points"),
    "alimiter": ("level_in", "level_out", "limit", "attack", "release"),
    "dynaudnorm": ("framelen", "gausssize"),
    "loudnorm": ("i", "lra", "tp", "measured_i", "measured_lra", "measured_tp", "measured_thresh", "offset",
                 "linear", "dual_mono", "print_format"),
}
_ALIASES = {
    "f": "frequency", "t": "width_type", "w": "width", "g": "gain",
    "I": "i", "LRA": "lra", "TP": "tp", "measured_I": "measured_i", "measured_LRA": "measured_lra",
    "measured_TP": "measured_tp",
}
#: filters that need the whole file at once, and why they cannot run on segments
WHOLE_FILE = {
    "areverse": "it reverses the whole file",
    "aloop": "it loops the whole file",
    "silenceremove": "it removes silence, moving everything after it",
}
#: ffmpeg's biquad filters and their default centre or corner frequency
_BIQUADS = {
    "highpass": 3000.0, "lowpass": 500.0, "bandpass": 3000.0, "bandreject": 3000.0, "allpass": 3000.0,
    "equalizer": 1000.0, "bass": 100.0, "lowshelf": 100.0, "treble": 3000.0, "highshelf": 3000.0,
    "tiltshelf": 3000.0,
}


class ChainSyntaxError(ValueError):
    pass


@dataclass
class Filter:
    """One filter of a chain: ``name[@id][=args]``."""

    name: str
    label: str = ""  # the ``@id`` part, kept when written back
    positional: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    raw_args: str | None = None

    def option(self, key: str) -> str | None:
        """A named option, or the positional argument in its place."""
        if key in self.options:
            return self.options[key]
        order = _POSITIONAL.get(self.name) or (_BIQUAD_ORDER if self.name in _BIQUADS else ())
        if key in order and order.index(key) < len(self.positional):
            return self.positional[order.index(key)]
        return None

    def named(self) -> dict[str, str]:
        """All options by name (positional ones resolved where the order is known)."""
        order = _POSITIONAL.get(self.name) or (_BIQUAD_ORDER if self.name in _BIQUADS else ())
        if len(self.positional) > len(order):
            raise ChainSyntaxError(f"{self.name}: cannot name its positional options {self.positional}")
        return {**dict(zip(order, self.positional, strict=False)), **self.options}

    def text(self) -> str:
        head = self.name + (f"@{self.label}" if self.label else "")
        if self.raw_args is None:
            return head
        return f"{head}={self.raw_args}"


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside single quotes and not escaped with a backslash."""
    parts, cur, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    if quoted:
        raise ChainSyntaxError("unbalanced single quote")
    parts.append("".join(cur))
    return parts


def _unquote(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        elif value[i] == "'":
            i += 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out).strip()


def parse_chain(text: str) -> list[Filter]:
    """The filters of a single linear chain (``a=1:b=2,c,d=x``); an empty chain is []."""
    if not text.strip():
        return []
    if len(_split_top(text, ";")) > 1:
        raise ChainSyntaxError("';' joins filter chains into a graph; give one chain of filters")
    filters = []
    for part in _split_top(text, ","):
        part = part.strip()
        if not part:
            raise ChainSyntaxError("empty filter (two commas in a row, or a trailing comma)")
        if part.startswith("[") or part.endswith("]"):
            raise ChainSyntaxError("link labels ([a]) make a graph; give one chain of filters")
        head, eq, args = part.partition("=")
        name, _, label = head.strip().partition("@")
        filt = Filter(name=name.strip(), label=label.strip(), raw_args=args if eq else None)
        if not filt.name.replace("_", "").isalnum():
            raise ChainSyntaxError(f"{filt.name!r} is not a filter name")
        if eq:
            for arg in _split_top(args, ":"):
                key, is_named, value = arg.partition("=")
                if is_named and key.strip().replace("_", "").isalnum():
                    key = key.strip()
                    filt.options[_ALIASES.get(key, key.lower() if filt.name == "loudnorm" else key)] = (
                        _unquote(value)
                    )
                else:
                    filt.positional.append(_unquote(arg))
        filters.append(filt)
    return filters


def chain_text(filters: list[Filter]) -> str:
    return ",".join(f.text() for f in filters)


#: pins a link to double precision
DOUBLE = "aformat=sample_fmts=dbl"


def pinned_text(filters: list[Filter]) -> str:
    """The chain with every link pinned to doubles.

    ffmpeg negotiates each link's sample format for the fewest conversions, so a chain
    between ``aformat=sample_fmts=dbl`` and a float encoder quietly runs in float.
    Pinning every link keeps each filter in double precision wherever it has a
    double implementation, whatever consumes the output.
    """
    return ",".join(f"{f.text()},{DOUBLE}" for f in filters)


def _number(value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        return float(value.rstrip("sS"))
    except ValueError:
        return default


def _numbers(value: str | None, default: float) -> list[float]:
    """ffmpeg lists: ``60|140`` or ``0.3 0.8``."""
    if value is None:
        return [default]
    found = [_number(v, default) for v in value.replace(" ", "|").split("|") if v]
    return found or [default]


def _biquad_q(filt: Filter, freq: float) -> float:
    width = filt.option("width")
    kind = (filt.option("width_type") or "q").lower()
    if width is None:
        return 1.0
    w = _number(width, 1.0)
    if kind in ("h", "hz"):
        return freq / max(w, 1e-3)
    if kind in ("k", "khz"):
        return freq / max(w * 1000, 1e-3)
    if kind in ("q",):
        return w
    return 1.0  # octaves or slope: about one


def state_seconds(filt: Filter) -> float:
    """How long a decaying state in ``filt`` takes to settle, in seconds (0 if it has none).

    Delay lines (aecho, adelay, FIR filters) are not counted here: their memory shows
    as the tail they add after the input ends, which `farm_audio.validate` measures.
    """
    name = filt.name
    if name in ("acompressor", "agate"):  # envelope follower; coefficient 4000 / (ms * rate)
        attack = _number(filt.option("attack"), 20.0)
        release = _number(filt.option("release"), 250.0)
        return SETTLE_TIME_CONSTANTS * max(attack, release) / 4000.0
    if name == "compand":  # attacks and decays are time constants in seconds
        times = _numbers(filt.option("attacks"), 0.0) + _numbers(filt.option("decays"), 0.8)
        return SETTLE_TIME_CONSTANTS * max(times) + _number(filt.option("delay"), 0.0)
    if name == "alimiter":
        return SETTLE_TIME_CONSTANTS * _number(filt.option("release"), 50.0) / 1000.0
    if name == "dynaudnorm":  # a Gaussian window of frames centred on the output
        return _number(filt.option("framelen"), 500.0) * _number(filt.option("gausssize"), 31.0) / 2000.0
    if name in _BIQUADS:
        freq = max(_number(filt.option("frequency"), _BIQUADS[name]), 1.0)
        return SETTLE_TIME_CONSTANTS * max(_biquad_q(filt, freq), 0.5) / (math.pi * freq)
    return 0.0


def lookahead_seconds(filt: Filter) -> float:
    """How far ahead of its output ``filt`` reads, in seconds (most filters: 0)."""
    if filt.name == "dynaudnorm":
        return _number(filt.option("framelen"), 500.0) * _number(filt.option("gausssize"), 31.0) / 2000.0
    if filt.name == "alimiter" and (filt.option("latency") or "0").lower() in ("1", "true"):
        return _number(filt.option("attack"), 5.0) / 1000.0
    return 0.0


def default_lead_in(filters: list[Filter], tail_seconds: float = 0.0) -> float:
    """Seconds of pre-roll: the base, plus every filter's settling time, plus the chain's
    measured tail (delay lines remember exactly as long as they ring on); memory adds up along a chain."""
    return round(BASE_LEAD_IN_S + sum(state_seconds(f) for f in filters) + tail_seconds, 3)


def default_lead_out(filters: list[Filter]) -> float:
    return round(sum(lookahead_seconds(f) for f in filters), 3)
