"""Reading and checking the ``[audio]`` table; the result is the plain settings every job gets.

Cheap checks (types, outputs, unknown keys) come first; then ffmpeg reads the input's
header, runs the chain on a generated signal, and decodes the input once to count its
samples exactly, so a bad project fails here and not in the middle of a render. What ffmpeg
found (the facts, `farm_audio.facts`) is all the settings need from it: a controller, which
runs no renderer checks, derives the same settings from the facts the submitter sent.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

from farm.paths import UnsafePath, resolve_inside
from farm.settings import SettingsReader
from farm_audio import checkcache, encode, ffmpeg, probe
from farm_audio.allow import REFUSED, NotAllowed, check_allowed
from farm_audio.chain import (
    DOUBLE,
    WHOLE_FILE,
    ChainSyntaxError,
    Filter,
    chain_text,
    default_lead_in,
    default_lead_out,
    parse_chain,
    pinned_text,
)
from farm_audio.facts import MAX_PROJECT_RATE, check_length, submitted_facts
from farm_audio.loudnorm import LOUDNORM_OWN, analysis_chain, gain_at_encode
from farm_audio.segments import count_segments
from farm_audio.source import content_digest
from farm_audio.splitcheck import check_split
from farm_audio.validate import ChainError

DEFAULT_SEGMENT_S = 30.0
DEFAULT_OUTPUTS = ("flac",)
#: channel count -> ffmpeg's default layout for it
LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")


def read_settings(s: SettingsReader) -> dict[str, Any]:
    input_rel = s.asset("input")
    rate_setting = s.integer("sample_rate", None, min=8000, max=MAX_PROJECT_RATE)
    channels_setting = s.get("channels", None)
    filters_text = s.str("filters", "")
    segment_s = s.number("segment", DEFAULT_SEGMENT_S, min=0.001)
    lead_in_setting = s.number("lead_in", None, min=0)
    lead_out_setting = s.number("lead_out", None, min=0)
    keep_tail = s.boolean("tail", True)
    output_specs = s.str_list("outputs", list(DEFAULT_OUTPUTS))
    name = s.str("name", None)
    s.finish()

    if name is None:  # the input's stem, made safe for any file system
        name = re.sub(r"[^A-Za-z0-9._ -]", "_", Path(input_rel).stem).lstrip("._ -") or "audio"
    elif not _NAME.match(name):
        raise s.error("name", f"{name!r} is not a plain file name (letters, digits, '.', '_', '-', spaces)")
    try:
        filters = parse_chain(filters_text)
    except ChainSyntaxError as exc:
        raise s.error("filters", f"not a filter chain: {exc}") from None
    # The controller measures nothing: the submitter's ffmpeg did, and sent what it found (a
    # submitter from before facts existed sends none: then this host's ffmpeg measures).
    measuring = s.renderer_checks or not s.facts
    _check_names(s, filters, measuring)
    loudnorm = _loudnorm_index(s, filters)
    try:  # ffmpeg reads it here, with this host's rights: never through a link out of the project
        path = resolve_inside(s.root, input_rel)
    except UnsafePath as exc:
        raise s.error("input", str(exc)) from None
    leads = (segment_s, lead_in_setting, lead_out_setting)
    digest = content_digest(path)  # what the measurements of the input are kept by (`checkcache`)
    if measuring:
        found = _measure(s, path, digest, input_rel, filters, loudnorm, rate_setting, channels_setting, leads)
    else:
        found = submitted_facts(s)

    sample_rate, layout, convert, raw = _format(s, found, rate_setting, channels_setting)
    check_length(s, found["samples"], sample_rate)
    try:
        outputs = encode.parse_outputs(output_specs, sample_rate)
    except encode.OutputSpecError as exc:
        raise s.error("outputs", str(exc)) from None
    split, lead_in_s, lead_out_s = _plan(found, filters, sample_rate, layout, raw, leads)
    whole_file = found["whole_file"]
    if whole_file:
        split.update(segment=found["samples"], lead_in=0, lead_out=0)
        lead_in_s = lead_out_s = 0.0
    at_encode = gain_at_encode(filters, loudnorm)
    streams = ["f64le"] if at_encode else encode.segment_streams(outputs)
    _check_job_size(s, min(split["segment"], found["samples"]), sample_rate, found["out_channels"], streams,
                    whole_file)
    stat = path.stat()
    return {
        "input": input_rel,
        "input_size": stat.st_size,
        # what a worker's decoded copy and a resumed join are keyed by: a file rewritten with the
        # same size (and even the same mtime) is a new input
        "input_digest": digest,
        "codec": found["codec"],
        "samples": found["samples"],
        "sample_rate": sample_rate,
        "layout": layout,
        "channels": probe.layout_channels(layout),
        "convert": convert,
        "raw": raw,
        "filters": chain_text(filters),
        "loudnorm": loudnorm,
        # derived from the chain, not a fact: loudnorm last means the encoders apply its gain
        "gain_at_encode": at_encode,
        "out_layout": found["out_layout"],
        "out_channels": found["out_channels"],
        "segment": split["segment"],
        "lead_in": split["lead_in"],
        "lead_out": split["lead_out"],
        "whole_file": whole_file,
        "lead_in_s": lead_in_s,
        "lead_out_s": lead_out_s,
        "tail": keep_tail,
        # the encoders' gain must see the chain's doubles, as loudnorm does in one run
        "streams": streams,
        "pcm": streams[0],  # the first stream's (the waveform preview reads it)
        "outputs": [o.to_wire() for o in outputs],
        "name": name,
        "probed": found,  # what ffmpeg found (`renderer_facts`): all the rest follows from it and the table
    }


def _check_job_size(s: SettingsReader, segment: int, rate: int, channels: int, streams: list[str],
                    whole_file: str | None) -> None:
    """A segment's PCM (every stream a job returns) must fit in what one job may return
    (``[jobs] max_output_mib``): found here, not after a job's render fails three times."""
    if s.max_output is None:
        return
    frame = channels * sum(probe.RAW_BYTES[fmt] for fmt in streams)
    if segment * frame <= s.max_output:
        return
    size, limit = segment * frame / 2**20, s.max_output / 2**20
    longest = s.max_output // frame / rate
    what = (f"{channels} channel{'s' if channels != 1 else ''} of {' + '.join(streams)} PCM "
            f"({frame} bytes a sample, all of which a job returns)")
    if whole_file:  # the chain cannot be cut: the whole input is the one job
        raise s.error("filters", f"{whole_file}, so the whole "
                                 f"{segment / rate:.1f} s input is one job, whose {what} come to {size:.1f} "
                                 f"MiB, over the {limit:.1f} MiB a job may return ([jobs] max_output_mib, at "
                                 f"most 60): use an input of at most {longest:.0f} s, or a chain that splits")
    raise s.error("segment", f"a {segment / rate:g} s segment of {what} is {size:.1f} MiB, over the "
                             f"{limit:.1f} MiB a job may return ([jobs] max_output_mib, at most 60): use "
                             f"segments of at most {longest:.0f} s")


def _measure(s: SettingsReader, path: Path, digest: str, input_rel: str, filters: list[Filter],
             loudnorm: int | None, rate_setting: int | None, channels_setting: Any,
             leads: tuple[Any, ...]) -> dict[str, Any]:
    """Ask ffmpeg: the input's format and exact length, the chain's shape, whether it splits.

    Returns the facts (`farm_audio.facts.FACTS`) the settings are derived from. ffmpeg's
    answers are kept on disk (`farm_audio.checkcache`, by the content ``digest`` of the input
    and the chain's text), so a worker loading a project this host already checked runs none.
    """
    try:
        info = checkcache.probe_stream(path, digest)
    except probe.ProbeError as exc:
        raise s.error("input", f"cannot read {input_rel!r}: {exc}") from None
    found: dict[str, Any] = {"codec": info.codec, "source_rate": info.sample_rate,
                             "source_layout": probe.raw_layout(info.layout), "source_fmt": info.sample_fmt}
    sample_rate, layout, convert, raw = _format(s, found, rate_setting, channels_setting)
    shape = _check_filters(s, filters, loudnorm, sample_rate, layout)
    try:
        measured = checkcache.measure(path, digest, convert, info.codec)
    except probe.ProbeError as exc:
        raise s.error("input", f"cannot decode {input_rel!r}: {exc}") from None
    if measured.samples == 0:
        raise s.error("input", f"{input_rel!r} holds no audio (zero samples)")
    check_length(s, measured.samples, sample_rate)
    found.update(samples=measured.samples, tail=shape.tail, out_channels=shape.channels,
                 out_layout=probe.raw_layout(shape.layout))
    split, _, _ = _plan(found, filters, sample_rate, layout, raw, leads)
    found["whole_file"] = _whole_file_reason(s, filters, loudnorm, split, measured.samples)
    return found


def _format(s: SettingsReader, found: dict[str, Any], rate_setting: int | None,
            channels_setting: Any) -> tuple[int, str, str, str]:
    """(sample rate, layout, conversion filter, raw PCM format) of the source every job reads:
    the decoded input, converted once if the project asks for another rate or layout
    (conversion is stateful, so it runs over the whole file)."""
    sample_rate = rate_setting or found["source_rate"]
    layout = found["source_layout"] if channels_setting is None else _layout(s, channels_setting)
    converts = sample_rate != found["source_rate"] or layout != found["source_layout"]
    convert = f"{DOUBLE}:sample_rates={sample_rate}:channel_layouts={layout}" if converts else ""
    raw = "f64le" if converts else probe.RAW_FORMATS.get(found["source_fmt"], "f64le")
    return sample_rate, layout, convert, raw


def _plan(found: dict[str, Any], filters: list[Filter], sample_rate: int, layout: str, raw: str,
          leads: tuple[Any, ...]) -> tuple[dict[str, Any], float, float]:
    """The segments' format and lengths in samples, and the lead-in and lead-out in seconds."""
    segment_s, lead_in_setting, lead_out_setting = leads
    tail_s = found["tail"] / sample_rate
    lead_in_s = default_lead_in(filters, tail_s) if lead_in_setting is None else lead_in_setting
    lead_out_s = default_lead_out(filters) if lead_out_setting is None else lead_out_setting
    split = {
        "sample_rate": sample_rate, "layout": layout, "channels": probe.layout_channels(layout), "raw": raw,
        "out_channels": found["out_channels"], "segment": max(1, round(segment_s * sample_rate)),
        "lead_in": math.ceil(lead_in_s * sample_rate), "lead_out": math.ceil(lead_out_s * sample_rate),
    }
    return split, lead_in_s, lead_out_s


def _whole_file_reason(
    s: SettingsReader, filters: list[Filter], loudnorm: int | None, split: dict[str, Any], samples: int
) -> str:
    """Why the chain must run whole-file ("" when its segments equal a whole run, or there is one)."""
    if not filters or count_segments(samples, split["segment"]) == 1:
        return ""
    verdict, cached = check_split(split, chain_text(segment_form(filters, loudnorm)))
    if verdict.splits:
        return ""
    reason = f"{chain_text(filters)!r} does not split into segments: {verdict.reason}"
    # warned once per process and chain: a project is loaded more than once per run
    log.log(logging.INFO if cached else logging.WARNING, "%s: %s; running the whole file as one job",
            s.file, reason)
    return reason


def _layout(s: SettingsReader, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in LAYOUTS:
            raise s.error("channels", f"expected 1 to 8 channels, got {value}")
        return LAYOUTS[value]
    if isinstance(value, str):
        try:
            probe.layout_channels(value)
        except probe.ProbeError:
            raise s.error("channels", f"unknown channel layout {value!r} (try a count)") from None
        return value
    raise s.error("channels", f"expected a channel count or a layout name, got {value!r}")


def _check_names(s: SettingsReader, filters: list[Filter], measuring: bool) -> None:
    """Every filter is allowed and can run on segments, and (``measuring``) exists in this ffmpeg.

    Nothing of the chain reaches ffmpeg before this passed (``ffmpeg -filters`` only lists).
    """
    known = checkcache.audio_filters() if measuring else frozenset()
    for f in filters:
        if measuring and f.name not in known and f.name not in REFUSED:
            kind = ffmpeg.filter_kinds().get(f.name)  # only on this error's path: another run of ffmpeg
            if kind is None:
                why = f"this ffmpeg has no audio filter named {f.name!r} (ffmpeg -filters)"
            else:
                why = (f"{f.name!r} is not a filter of one audio stream in and one out (ffmpeg -filters "
                       f"lists it as {kind}): a chain here is one line of such filters")
            raise s.error("filters", why)
    try:
        check_allowed(filters)
    except NotAllowed as exc:
        raise s.error("filters", str(exc)) from None
    for f in filters:
        if f.name in WHOLE_FILE:
            raise s.error("filters", f"{f.name} cannot run on segments: {WHOLE_FILE[f.name]}")


def _loudnorm_index(s: SettingsReader, filters: list[Filter]) -> int | None:
    """Where loudnorm is in the chain (None if it is not), checking its options."""
    found = [i for i, f in enumerate(filters) if f.name == "loudnorm"]
    if len(found) > 1:
        raise s.error("filters", "only one loudnorm per chain: its two passes measure the whole file once")
    if not found:
        return None
    try:
        named = filters[found[0]].named()
    except ChainSyntaxError as exc:
        raise s.error("filters", str(exc)) from None
    own = sorted(k for k in named if k in LOUDNORM_OWN)
    if own:
        raise s.error("filters", f"loudnorm: leave out {', '.join(own)}; the farm measures and sets them")
    return found[0]


def _check_filters(
    s: SettingsReader, filters: list[Filter], loudnorm: int | None, sample_rate: int, layout: str
) -> Any:
    """Run the chain (segment form) through ffmpeg; loudnorm also in its analysis form."""
    try:
        if loudnorm is not None:
            checkcache.check_runs(analysis_chain(filters, loudnorm), sample_rate, layout)
        return checkcache.check_chain(pinned_text(segment_form(filters, loudnorm)), sample_rate, layout)
    except ChainError as exc:
        raise s.error("filters", f"{chain_text(filters)!r}: {exc}") from None


def segment_form(filters: list[Filter], loudnorm: int | None) -> list[Filter]:
    """The chain as segments run it, for checks: loudnorm's linear second pass is a constant
    gain, so ``anull`` has its shape and its (lack of) memory."""
    if loudnorm is None:
        return filters
    return [*filters[:loudnorm], Filter("anull"), *filters[loudnorm + 1 :]]
