"""What an audio file holds: its first audio stream's format, and its exact length in samples.

There is no ffprobe in imageio-ffmpeg, so the format comes from ``ffmpeg -i``'s stream
line and the length from decoding (container durations are not sample-exact for MP3,
AAC or Opus): ffmpeg's ``framecrc`` muxer lists every decoded frame's sample count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from farm_audio import ffmpeg

# "Stream #0:0(eng): Audio: mp3 (mp3float), 44100 Hz, stereo, fltp, 128 kb/s"
_STREAM = re.compile(
    r"Stream #\d+:\d+\S*: Audio: (?P<codec>[^,]+), (?P<rate>\d+) Hz, (?P<layout>[^,]+), (?P<fmt>[a-z0-9]+)"
)
_FRAME = re.compile(r"^\s*\d+,\s*-?\d+,\s*-?\d+,\s*(\d+),")
_HEADER = re.compile(r"^#(sample_rate|channel_layout_name) 0: (.+)$")

#: decoded sample formats and the packed raw format that holds them exactly
RAW_FORMATS = {
    "u8": "u8", "u8p": "u8",
    "s16": "s16le", "s16p": "s16le",
    "s32": "s32le", "s32p": "s32le",
    "flt": "f32le", "fltp": "f32le",
    "dbl": "f64le", "dblp": "f64le",
    "s64": "f64le", "s64p": "f64le",
}
RAW_BYTES = {"u8": 1, "s16le": 2, "s32le": 4, "f32le": 4, "f64le": 8}


class ProbeError(ValueError):
    pass


@dataclass(frozen=True)
class StreamInfo:
    codec: str
    sample_rate: int
    layout: str  # as ffmpeg names it: "mono", "stereo", "5.1(side)", "3 channels"
    sample_fmt: str  # the decoder's: "s16", "fltp", ...

    @property
    def channels(self) -> int:
        return layout_channels(self.layout)


@dataclass(frozen=True)
class Measured:
    """What decoding (through an optional filter) produced."""

    samples: int
    sample_rate: int
    layout: str


def layout_channels(layout: str) -> int:
    """Channels in an ffmpeg layout name (the common ones, and "N channels")."""
    found = re.match(r"^(\d+) channels?$", layout) or re.match(r"^(\d+)C$", layout)
    if found:
        return int(found.group(1))
    known = {
        "mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4, "quad(side)": 4,
        "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6, "5.1(side)": 6, "6.0": 6, "6.0(front)": 6,
        "hexagonal": 6, "6.1": 7, "6.1(back)": 7, "6.1(front)": 7, "7.0": 7, "7.0(front)": 7, "7.1": 8,
        "7.1(wide)": 8, "7.1(wide-side)": 8, "octagonal": 8, "downmix": 2,
    }
    if layout in known:
        return known[layout]
    raise ProbeError(f"unknown channel layout {layout!r}")


def raw_layout(layout: str) -> str:
    """A layout name the raw PCM demuxer's ``-ch_layout`` accepts."""
    found = re.match(r"^(\d+) channels?$", layout)
    return f"{found.group(1)}C" if found else layout


def probe_stream(path: Path) -> StreamInfo:
    """The first audio stream's format, from the header; `ProbeError` with ffmpeg's words if unreadable."""
    if not path.is_file():
        raise ProbeError(f"{path} does not exist")
    try:
        ffmpeg.run(["-i", ffmpeg.file_arg(path)], quiet=False)
    except ffmpeg.FfmpegFailed as exc:  # ffmpeg with only an input always exits 1
        return _parse_stream(exc.stderr)
    raise ProbeError("ffmpeg gave no stream information")  # pragma: no cover


def _parse_stream(stderr: str) -> StreamInfo:
    found = _STREAM.search(stderr)
    if found:
        return StreamInfo(
            codec=found["codec"].strip(),
            sample_rate=int(found["rate"]),
            layout=found["layout"].strip(),
            sample_fmt=found["fmt"],
        )
    if "Stream #" in stderr:
        raise ProbeError("it has no audio stream")
    raise ProbeError(f"ffmpeg cannot read it: {ffmpeg.last_lines(stderr, 2)}")


def measure(path: Path, audio_filter: str = "", codec: str = "") -> Measured:
    """Count the first audio stream's samples exactly (after ``audio_filter``, if any).

    FLAC and PCM packets carry exact sample counts, so for them (with no filter) the
    packets are counted without decoding, several times faster; everything else is decoded.
    """
    name = codec.split(" ")[0]
    if not audio_filter and (name == "flac" or name.startswith("pcm_")):
        counted = _count_packets(path)
        if counted is not None:
            return counted
    args = ["-i", ffmpeg.file_arg(path), "-map", "0:a:0", "-vn", "-sn", "-dn"]
    if audio_filter:
        args += ["-af", audio_filter]
    try:
        proc = ffmpeg.run([*args, "-c:a", "pcm_s16le", "-f", "framecrc", "-"])
    except ffmpeg.FfmpegFailed as exc:
        raise ProbeError(f"ffmpeg cannot decode it: {exc.message}") from None
    return parse_framecrc(proc.stdout.decode("ascii", "replace"))


def _count_packets(path: Path) -> Measured | None:
    """Sum the packets' durations, when the stream counts time in samples; None if it does not."""
    try:
        args = ["-i", ffmpeg.file_arg(path), "-map", "0:a:0", "-c:a", "copy", "-f", "framecrc", "-"]
        proc = ffmpeg.run(args)
    except ffmpeg.FfmpegFailed as exc:
        raise ProbeError(f"ffmpeg cannot read it: {exc.message}") from None
    text = proc.stdout.decode("ascii", "replace")
    found = re.search(r"^#tb 0: 1/(\d+)$", text, re.M)
    measured = parse_framecrc(text)
    if not found or int(found.group(1)) != measured.sample_rate:
        return None
    return measured


def parse_framecrc(text: str) -> Measured:
    header: dict[str, str] = {}
    samples = 0
    for line in text.splitlines():
        frame = _FRAME.match(line)
        if frame:
            samples += int(frame.group(1))
            continue
        found = _HEADER.match(line)
        if found:
            header[found.group(1)] = found.group(2).strip()
    if "sample_rate" not in header:
        raise ProbeError("ffmpeg produced no audio")
    return Measured(samples, int(header["sample_rate"]), header.get("channel_layout_name", "mono"))
