"""Reading an ffmpeg audio filter chain: its filters, their options, how much history they keep.

Only what the farm needs: the filter names (to find ``loudnorm`` and reject graphs),
a few numeric options (to size the lead-in), and a way to write a filter back.
ffmpeg itself validates the chain (see `farm_audio.validate`).
"""

from __future__ import annotations

import math
import re
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


_NAME = re.compile(r"[A-Za-z0-9_]+")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHITESPACE = " \t\r\n"
#: characters that end or split a value at ffmpeg's option level or in farm's one-level form
_SPECIAL = set("\\':=,;[]")


def _quoted(value: str) -> str:
    """``value`` as one option token: bare when that is unambiguous, else single-quoted."""
    if value and not (set(value) & _SPECIAL) and value.strip(_WHITESPACE) == value:
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def _graph_escaped(text: str) -> str:
    """Escape what ffmpeg's graph level reads before handing a filter its arguments."""
    return re.sub(r"([\\'\[\],;])", r"\\\1", text)


@dataclass
class Filter:
    """One filter of a chain: ``name[@id][=args]``.

    ``args`` holds each argument as written: ``(key, value)``, or ``(None, value)`` for a
    positional one, values unquoted. farm reads a chain with one level of quoting
    (``'...'`` and backslashes); `text` escapes it for ffmpeg's two levels (graph, then
    options), so ffmpeg receives exactly the arguments farm checked.
    """

    name: str
    label: str = ""  # the ``@id`` part, kept when written back
    args: list[tuple[str | None, str]] = field(default_factory=list)

    @property
    def positional(self) -> list[str]:
        return [v for k, v in self.args if k is None]

    @property
    def options(self) -> dict[str, str]:
        """Named options, with the aliases the lead-in code knows folded to one name."""
        out = {}
        for key, value in self.args:
            if key is not None:
                out[_ALIASES.get(key, key.lower() if self.name == "loudnorm" else key)] = value
        return out

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

    def _args_text(self) -> str:
        return ":".join(_quoted(v) if k is None else f"{k}={_quoted(v)}" for k, v in self.args)

    def source(self) -> str:
        """farm's one-level form (what `parse_chain` reads back to the same filter)."""
        head = self.name + (f"@{self.label}" if self.label else "")
        return f"{head}={self._args_text()}" if self.args else head

    def text(self) -> str:
        """The filter as ffmpeg's ``-af`` must read it to see the same arguments."""
        head = self.name + (f"@{self.label}" if self.label else "")
        return f"{head}={_graph_escaped(self._args_text())}" if self.args else head


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside single quotes and not escaped with a backslash."""
    parts, cur, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and not quoted:
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
    """One token as ffmpeg's ``av_get_token`` reads it: quotes and backslashes removed,
    outer whitespace dropped unless quoted or escaped."""
    out: list[str] = []
    keep = 0  # output up to here is quoted or escaped: never stripped
    i = len(value) - len(value.lstrip(_WHITESPACE))
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
            keep = len(out)
        elif ch == "'":
            close = value.find("'", i + 1)
            close = len(value) if close < 0 else close
            out.append(value[i + 1 : close])
            i = close + 1
            keep = len(out)
        else:
            out.append(ch)
            i += 1
    return "".join(out[:keep]) + "".join(out[keep:]).rstrip(_WHITESPACE)


def _parse_args(name: str, args: str) -> list[tuple[str | None, str]]:
    parsed: list[tuple[str | None, str]] = []
    for arg in _split_top(args, ":"):
        if not arg.strip(_WHITESPACE):
            raise ChainSyntaxError(f"{name}: empty option (two ':' in a row, or a trailing ':')")
        key, is_named, value = arg.partition("=")
        key = key.strip(_WHITESPACE)
        if is_named and key.startswith("/"):
            raise ChainSyntaxError(
                f"{name}: {key}=...: loading an option's value from a file ('/option=path') is not allowed"
            )
        if is_named and _KEY.fullmatch(key):
            parsed.append((key, _unquote(value)))
        elif any(k is not None for k, _ in parsed):
            raise ChainSyntaxError(
                f"{name}: {arg.strip()!r} has no option name (positional values come first)"
            )
        else:
            parsed.append((None, _unquote(arg)))
    return parsed


def parse_chain(text: str) -> list[Filter]:
    """The filters of a single linear chain (``a=1:b=2,c,d=x``); an empty chain is []."""
    if not text.strip():
        return []
    if any(ord(ch) < 32 and ch not in " \t" for ch in text) or "\x7f" in text:
        raise ChainSyntaxError("control characters (newlines, NUL) are not allowed in a filter chain")
    if len(_split_top(text, ";")) > 1:
        raise ChainSyntaxError("';' joins filter chains into a graph; give one chain of filters")
    filters = []
    for part in _split_top(text, ","):
        part = part.strip()
        if not part:
            raise ChainSyntaxError("empty filter (two commas in a row, or a trailing comma)")
        if part.startswith("[") or part.endswith("]"):
            raise ChainSyntaxError("link labels ([a]) make a graph; give one chain of filters")
        head, _, args = part.partition("=")
        name, _, label = head.strip().partition("@")
        name, label = name.strip(), label.strip()
        if not _NAME.fullmatch(name):
            raise ChainSyntaxError(f"{name!r} is not a filter name")
        if label and not _NAME.fullmatch(label):
            raise ChainSyntaxError(f"{name}@{label}: an instance name is letters, digits and '_'")
        filters.append(Filter(name=name, label=label, args=_parse_args(name, args) if args.strip() else []))
    return filters


def chain_text(filters: list[Filter]) -> str:
    """The chain in farm's one-level form, as settings carry it and messages quote it."""
    return ",".join(f.source() for f in filters)


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
