"""Which ffmpeg audio filters and options a project may use: an allowlist, checked before ffmpeg runs.

A chain from ``farm.toml`` runs on the controller (to check it) and on every agent, with
their rights. ffmpeg filters can write files (``ametadata file``, ``firequalizer
dumpfile``, ``loudnorm stats_file``), read them (``asendcmd``, model files), open sockets
(``azmq``) or load native code (``ladspa``, ``lv2``). Only the filters below run: each was
read option by option (``ffmpeg -h filter=NAME``) for anything that reaches a file, a
socket or the clock. A filter missing here is refused by name, whatever ffmpeg offers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from farm.paths import UnsafePath, safe_relpath
from farm_audio.chain import DOUBLE, ChainSyntaxError, Filter, parse_chain
from farm_audio.probe import RAW_BYTES

#: audio -> audio filters with no option that opens a file, a socket or waits on the clock
SAFE = frozenset({
    "acompressor", "acontrast", "acopy", "acrusher", "adeclick", "adeclip", "adecorrelate", "adelay",
    "adenorm", "aderivative", "adrc", "adynamicequalizer", "adynamicsmooth", "aecho", "aemphasis", "aeval",
    "aexciter", "afade", "afftdn", "afftfilt", "aformat", "afreqshift", "afwtdn", "agate", "aintegral",
    "alatency", "alimiter", "allpass", "aloop", "anull", "apad", "aperms", "aphaser",
    "aphaseshift", "apsyclip", "apulsator", "aresample", "areverse", "asetnsamples", "asetpts", "asetrate",
    "asettb", "ashowinfo", "asidedata", "asoftclip", "aspectralstats", "astats", "asubboost", "asubcut",
    "asupercut", "asuperpass", "asuperstop", "atempo", "atilt", "atrim", "bandpass", "bandreject", "bass",
    "biquad", "channelmap", "chorus", "compand", "compensationdelay", "crossfeed", "crystalizer",
    "dcshift", "deesser", "dialoguenhance", "drmeter", "dynaudnorm", "earwax", "equalizer", "extrastereo",
    "flanger", "haas", "hdcd", "highpass", "highshelf", "lowpass", "lowshelf", "mcompand", "pan",
    "replaygain", "rubberband", "silencedetect", "silenceremove", "speechnorm", "stereotools",
    "stereowiden", "superequalizer", "surround", "tiltshelf", "treble", "tremolo", "vibrato",
    "virtualbass", "volume", "volumedetect",
})

#: filters allowed without their file options: filter -> (file options, how many positional
#: values may come before the first of them in ffmpeg's option order)
FILE_OPTIONS: dict[str, tuple[tuple[str, ...], int]] = {
    "ametadata": (("file",), 5),  # mode key value function expr file
    "firequalizer": (("dumpfile",), 9),  # gain gain_entry delay accuracy wfunc fixed multi zero_phase scale
    # I LRA TP measured_I measured_LRA measured_TP measured_thresh offset linear dual_mono print_format
    "loudnorm": (("stats_file",), 11),
}

#: filters people reach for that are refused, and why (a clearer message than "not allowed")
REFUSED = {
    "azmq": "it opens a network socket that anyone who can reach it can send commands to",
    "zmq": "it opens a network socket that anyone who can reach it can send commands to",
    "asendcmd": "it reads commands from a file",
    "sendcmd": "it reads commands from a file",
    "amovie": "it opens another file or URL",
    "movie": "it opens another file or URL",
    "ladspa": "it loads a native plugin library (code) from the file system",
    "lv2": "it loads a native plugin library (code) from the file system",
    "arnndn": "it reads a model file",
    "sofalizer": "it reads a SOFA file",
    "afir": "it takes its impulse response from a second input (a graph, not a chain)",
    "headphone": "it takes impulse responses from more inputs (a graph, not a chain)",
    "asr": "it reads speech-model files",
    "whisper": "it reads a model file and writes transcripts to a file or URL",
    "arealtime": "it sleeps to play at real time",
    "realtime": "it sleeps to play at real time",
    "acue": "it waits for a wall-clock time",
    "abench": "it only measures time",
    "anlmdn": "it corrupts ffmpeg's memory and aborts (ffmpeg 9.0, on every input tried)",
}


class NotAllowed(ValueError):
    """A filter or option outside the allowlist; the message names both and says why."""


#: a number as an option (or an item of a '|' or space list) gives it, with a unit ffmpeg reads
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan)(?:db|ms|us|s|hz)?",
                     re.IGNORECASE)
_UNIT = re.compile(r"(?:db|ms|us|s|hz)$", re.IGNORECASE)


def check_finite(f: Filter) -> None:
    """Raise `NotAllowed` for an option of ``f`` that is a number but not a finite one (inf,
    -infinity, nan, 1e999): ffmpeg takes some of them and makes silence or garbage of the audio."""
    for key, value in f.args:
        for item in re.split(r"[|\s]+", value.strip()):
            if _NUMBER.fullmatch(item) and not math.isfinite(float(_UNIT.sub("", item))):
                where = f"option {key!r}" if key else "a positional option"
                raise NotAllowed(f"{f.name}: {where} is {value!r}, not a finite number")


def check_allowed(filters: list[Filter]) -> None:
    """Raise `NotAllowed` for the first filter or option of ``filters`` not known to be safe
    (a filter not on the list, an option naming a file, a number that is not finite).

    Pure: reads no file and runs nothing, so it can come before any ffmpeg run.
    """
    for f in filters:
        check_finite(f)
        if f.name in REFUSED:
            raise NotAllowed(f"{f.name} is not allowed: {REFUSED[f.name]}")
        if f.name not in SAFE and f.name not in FILE_OPTIONS:
            raise NotAllowed(
                f"{f.name} is not on farm's list of allowed audio filters (docs/media-audio.md lists them)"
            )
        if f.name in FILE_OPTIONS:
            names, before = FILE_OPTIONS[f.name]
            for key, _ in f.args:
                if key in names:
                    raise NotAllowed(
                        f"{f.name}: option {key!r} is not allowed: it names a file ffmpeg would open"
                    )
            if len(f.positional) > before:
                raise NotAllowed(
                    f"{f.name}: give its options by name after the first {before} "
                    f"(a value in {names[0]!r}'s place would name a file)"
                )


_LAYOUT = re.compile(r"[A-Za-z0-9.()+_-]{1,64}")
_CONVERT = re.compile(rf"{re.escape(DOUBLE)}:sample_rates=\d{{4,6}}:channel_layouts={_LAYOUT.pattern}")


def check_settings(settings: Mapping[str, Any]) -> None:
    """On a render node: the settings a job came with are ones `read_settings` could have made.

    A controller is trusted only this far: what reaches ffmpeg's command line (the chain,
    the conversion, formats, the input's path) is checked again here, with the same rules.
    Raises `NotAllowed` naming the setting.
    """
    try:
        safe_relpath(settings["input"])
        formats = [settings["raw"], settings["pcm"], *settings["streams"]]
        known = all(isinstance(f, str) and f in RAW_BYTES for f in formats)
        if not settings["streams"] or len(formats) > 6 or not known:
            raise NotAllowed(f"unknown PCM format in {formats!r}")
        if not _LAYOUT.fullmatch(settings["layout"]):
            raise NotAllowed(f"layout {settings['layout']!r} is not a channel layout name")
        if settings["convert"] and not _CONVERT.fullmatch(settings["convert"]):
            raise NotAllowed(f"convert {settings['convert']!r} is not a format conversion")
        for key in ("sample_rate", "channels", "samples", "segment", "lead_in", "lead_out", "out_channels"):
            if type(settings[key]) is not int or settings[key] < 0:
                raise NotAllowed(f"{key} {settings[key]!r} is not a count")
        filters = parse_chain(settings["filters"])
    except (KeyError, TypeError) as exc:
        raise NotAllowed(f"malformed audio settings ({type(exc).__name__}: {exc})") from None
    except (UnsafePath, ChainSyntaxError) as exc:
        raise NotAllowed(str(exc)) from None
    check_allowed(filters)
