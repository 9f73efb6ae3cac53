"""What ffmpeg found about a project (its renderer facts), as a controller takes them from a submitter.

The submitter's ``configure`` asks ffmpeg: the input's codec, rate, layout and sample format,
its exact length, the chain's output shape and tail, and whether the chain splits into
segments (`farm_audio.config`). Those are the facts; everything else in the settings follows
from them and the table. A controller, which runs no renderer checks, gets them with the
submit. A remote submitter may lie, so each is checked here for type and bounds: a lie can
then only make the run's jobs fail (each agent's ffmpeg finds the true facts, and an agent
that finds others fails the job naming both) and never widens what the controller writes:
output names come from the table, and the one fact that reaches the controller's ffmpeg
command line (the output layout, for the encoders) must be a channel layout ffmpeg names.
"""

from __future__ import annotations

import re
from typing import Any

from farm.settings import SettingsReader
from farm_audio import probe
from farm_audio.validate import MAX_TAIL_SECONDS

#: the longest input the farm takes, in seconds: its decoded copy must fit a node's disk
MAX_INPUT_S = 7 * 24 * 3600
MAX_RATE = 1_000_000  # Hz, a source's rate
MAX_PROJECT_RATE = 384_000  # Hz, the most [audio] sample_rate may ask for
MAX_CHANNELS = 64
MAX_TEXT = 4000  # characters of a codec name or a whole-file reason
_LAYOUT = re.compile(r"[A-Za-z0-9.()+_ -]{1,64}")
#: the facts and what each holds
FACTS = {
    "codec": "the input's codec, as ffmpeg names it",
    "source_rate": "the input's sample rate (Hz)",
    "source_layout": "the input's channel layout",
    "source_fmt": "the decoder's sample format",
    "samples": "the input's exact length in samples (after any conversion)",
    "tail": "samples the chain adds after the end of its input",
    "out_channels": "the chain's output channels",
    "out_layout": "the chain's output channel layout",
    "whole_file": "why the chain does not split into segments ('' when it does)",
}


def submitted_facts(s: SettingsReader) -> dict[str, Any]:
    """The facts a submitter sent, each checked; `ProjectError` naming ``[audio.facts] key``."""
    f = s.facts_reader()
    codec = f.str("codec")
    source_rate = f.integer("source_rate", min=1, max=MAX_RATE)
    source_layout = _layout(f, "source_layout")
    source_fmt = f.choice("source_fmt", sorted(probe.RAW_FORMATS))
    samples = f.integer("samples", min=1)
    tail = f.integer("tail", min=0)
    out_channels = f.integer("out_channels", min=1, max=MAX_CHANNELS)
    out_layout = _layout(f, "out_layout")
    whole_file = f.str("whole_file")
    f.finish()
    if len(codec) > MAX_TEXT or len(whole_file) > MAX_TEXT:
        key = "codec" if len(codec) > MAX_TEXT else "whole_file"
        raise f.error(key, f"longer than {MAX_TEXT} characters")
    if probe.layout_channels(out_layout) != out_channels:
        raise f.error("out_channels", f"{out_channels} channels, but the output layout {out_layout!r} has "
                                      f"{probe.layout_channels(out_layout)}")
    if tail > MAX_TAIL_SECONDS * max(source_rate, MAX_PROJECT_RATE):  # in samples at the project's rate
        raise f.error("tail", f"{tail} samples is longer than any chain's tail")
    return {"codec": codec, "source_rate": source_rate, "source_layout": source_layout,
            "source_fmt": source_fmt, "samples": samples, "tail": tail, "out_channels": out_channels,
            "out_layout": out_layout, "whole_file": whole_file}


def check_length(s: SettingsReader, samples: int, sample_rate: int) -> None:
    """Refuse an input longer than `MAX_INPUT_S` (measured, or as a submitter claims it)."""
    if samples > MAX_INPUT_S * sample_rate:
        raise s.error("input", f"{samples} samples at {sample_rate} Hz is longer than the "
                           f"{MAX_INPUT_S // 86400} days of audio the farm takes")


def _layout(f: SettingsReader, key: str) -> str:
    value = f.str(key)
    try:
        if not _LAYOUT.fullmatch(value) or not 1 <= probe.layout_channels(value) <= MAX_CHANNELS:
            raise probe.ProbeError(value)
    except probe.ProbeError:
        raise f.error(key, f"{value[:80]!r} is not a channel layout ffmpeg names") from None
    return value

