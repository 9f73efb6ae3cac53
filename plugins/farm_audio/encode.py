"""Output formats: parsing ``outputs``, choosing the segments' PCM, the encoders' options
(`farm_audio.stream` runs them).

An output is ``"format"`` or ``"format:option"``; the option is a bitrate for lossy
formats (``"mp3:192k"``) and a sample format for lossless ones (``"flac:24"``,
``"wav:f32"``). Encoding runs with ffmpeg's bit-exact flags, so the same PCM always
gives the same bytes, and they equal an encode of a whole-file render.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

LOSSLESS = {
    # format: {option: (codec, sample_fmt)}, first option is the default
    "flac": {"16": ("flac", "s16"), "24": ("flac", "s32")},
    "wav": {
        "16": ("pcm_s16le", "s16"), "24": ("pcm_s24le", "s32"), "32": ("pcm_s32le", "s32"),
        "f32": ("pcm_f32le", "flt"), "f64": ("pcm_f64le", "dbl"),
    },
}
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
LOSSY = {
    # format: (codec, sample_fmt, default bitrate, muxer, extension, sample rates it takes (None: any))
    "mp3": ("libmp3lame", "fltp", "192k", "mp3", "mp3", _MP3_RATES),
    "aac": ("aac", "fltp", "160k", "adts", "aac", _AAC_RATES),
    "m4a": ("aac", "fltp", "160k", "ipod", "m4a", _AAC_RATES),
    "opus": ("libopus", "flt", "96k", "opus", "opus", (8000, 12000, 16000, 24000, 48000)),
}
FORMATS = (*LOSSLESS, *LOSSY)
#: the extensions of every output file audio writes (lossless formats: the format's name)
EXTENSIONS = (*LOSSLESS, *(spec[4] for spec in LOSSY.values()))
#: FLAC otherwise picks its block size from the frames it is fed, which depend on the source
_FIXED_FRAMES = {"flac": ("-frame_size", "4096")}
_BITRATE = re.compile(r"^(\d{1,3})k$")
#: raw PCM format that holds an encoder's input sample format exactly
_RAW_OF = {"s16": "s16le", "s32": "s32le", "flt": "f32le", "fltp": "f32le", "dbl": "f64le"}


class OutputSpecError(ValueError):
    pass


@dataclass(frozen=True)
class Output:
    spec: str  # as written in farm.toml
    format: str
    extension: str
    args: tuple[str, ...]  # ffmpeg output options, muxer included
    sample_fmt: str  # what the encoder consumes
    resamples: bool  # the encoder needs another sample rate, so ffmpeg resamples before it

    def to_wire(self) -> dict[str, object]:
        return {
            "spec": self.spec, "format": self.format, "extension": self.extension, "args": list(self.args),
            "sample_fmt": self.sample_fmt, "resamples": self.resamples,
        }

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> Output:
        return cls(**{**data, "args": tuple(data["args"])})  # type: ignore[arg-type]


def parse_output(spec: str, sample_rate: int) -> Output:
    fmt, _, option = spec.strip().lower().partition(":")
    if fmt in LOSSLESS:
        choices = LOSSLESS[fmt]
        option = option or next(iter(choices))
        if option not in choices:
            raise OutputSpecError(f"{spec!r}: {fmt} takes one of {', '.join(choices)} (bits, sample format)")
        codec, sample_fmt = choices[option]
        args = ("-c:a", codec, "-sample_fmt", sample_fmt, *_FIXED_FRAMES.get(fmt, ()), "-f", fmt)
        return Output(spec, fmt, fmt, args, sample_fmt, resamples=False)
    if fmt in LOSSY:
        codec, sample_fmt, default_rate, muxer, ext, rates = LOSSY[fmt]
        bitrate = option or default_rate
        found = _BITRATE.match(bitrate)
        if not found or not 6 <= int(found.group(1)) <= 512:
            raise OutputSpecError(f"{spec!r}: expected a bitrate like {default_rate} (6k to 512k)")
        args = ("-c:a", codec, "-b:a", bitrate, "-sample_fmt", sample_fmt, "-f", muxer)
        resamples = rates is not None and sample_rate not in rates
        return Output(spec, fmt, ext, args, sample_fmt, resamples=resamples)
    raise OutputSpecError(f"{spec!r}: unknown format (expected one of {', '.join(FORMATS)})")


def parse_outputs(specs: Sequence[str], sample_rate: int) -> list[Output]:
    outputs = [parse_output(s, sample_rate) for s in specs]
    seen: dict[str, str] = {}
    for out in outputs:
        if out.extension in seen:
            first = seen[out.extension]
            raise OutputSpecError(f"{first!r} and {out.spec!r} would both write a .{out.extension} file")
        seen[out.extension] = out.spec
    if not outputs:
        raise OutputSpecError("give at least one output format")
    return outputs


#: bytes a sample of each raw format takes (a stream of doubles: 8)
_BYTES = {"s16le": 2, "s32le": 4, "f32le": 4, "f64le": 8}


def segment_streams(outputs: Sequence[Output]) -> list[str]:
    """The raw PCM streams segments are rendered in: as narrow as is exact for every output.

    Converting the chain's double-precision output to an encoder's sample format is per
    sample, so it can happen in the segment job. One stream when every output takes the
    same format; one stream per format when together they are narrower than doubles (16-bit
    FLAC with MP3 or Opus: ``s16le`` and ``f32le``, 6 bytes a sample instead of 8, which
    every job moves three times and the encoder reads); else doubles (``f64le``), also when
    an encoder must resample (the resampler must see the doubles).
    """
    if any(o.resamples for o in outputs):
        return ["f64le"]
    formats = sorted({_RAW_OF[o.sample_fmt] for o in outputs}, key=lambda f: (_BYTES[f], f))
    if len(formats) == 1 or sum(_BYTES[f] for f in formats) < _BYTES["f64le"]:
        return formats
    return ["f64le"]


def stream_of(output: Output, streams: Sequence[str]) -> int:
    """Which of the segments' ``streams`` an output's encoder reads: its own format's, else the doubles."""
    own = _RAW_OF[output.sample_fmt]
    return streams.index(own) if own in streams else streams.index("f64le")


def input_args(raw: str, sample_rate: int, layout: str) -> list[str]:
    """ffmpeg input options for raw PCM."""
    return ["-f", raw, "-ar", str(sample_rate), "-ch_layout", layout]
