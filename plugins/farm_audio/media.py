"""The ``audio`` media type: an input file through an ffmpeg filter chain, in sample-exact segments.

split: one job per segment (plus loudnorm's analysis first; with loudnorm last the segments
render beside it and the encoders apply its gain, else they depend on it).
render: the segment's PCM, on a render node. collate: written into one raw PCM file at its
offset, as it arrives; each output is encoded while the join fills. finalize: every range
checked, then the encoders get the rest; the outputs are recorded (`farm_audio.finished`), so
a finalize run again after the joins are removed (`farm_audio.scratch`) returns them, and an
earlier run's outputs this run no longer writes are removed (`farm_audio.dropped`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from farm.errors import RenderError
from farm.mediatype import CollateContext, Job, MediaType, RenderContext
from farm.outputrecord import removal_note
from farm.preview import PreviewContext
from farm.project import Project
from farm.settings import SettingsReader
from farm_audio import dropped, encode, failedrun, ffmpeg, finished, preview
from farm_audio.allow import NotAllowed, check_settings
from farm_audio.config import read_settings
from farm_audio.join import JoinError, PcmJoin
from farm_audio.loudnorm import MEASURED
from farm_audio.probe import RAW_BYTES
from farm_audio.render import ANALYSIS_KEY, analyse_loudness, encode_filter, render_segment
from farm_audio.scratch import Scratch
from farm_audio.segments import Segment, count_segments, plan
from farm_audio.source import job_source
from farm_audio.stream import Encoders

_JOIN_KEY = "join"
_ENCODERS_KEY = "encoders"
_ANALYSIS_KEY = "loudnorm"
_SCRATCH_KEY = "scratch"
_RECORD_KEY = "finished"


def segments_of(settings: Mapping[str, Any]) -> Iterator[Segment]:
    return plan(settings["samples"], settings["segment"], settings["lead_in"], settings["lead_out"])


def fingerprint(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def join_name(settings: Mapping[str, Any], fmt: str | None = None) -> str:
    """A stream's join file's name in the output folder (hidden: it is removed once encoded).

    Without ``fmt``: the first stream's (the one the waveform preview reads).
    """
    return f".{settings['name']}.join.{fmt or settings['pcm']}"


def _analysis_record(ctx: CollateContext) -> Path:
    s = ctx.project.settings
    return ctx.output_dir / f".{s['name']}.loudnorm.{fingerprint(s)}.json"


def _finished_record(ctx: CollateContext) -> Path:
    s = ctx.project.settings
    return finished.record_path(ctx.output_dir, s["name"], fingerprint(s))


class AudioSegments(MediaType):
    name = "audio"
    description = "Audio through an ffmpeg filter chain, rendered in sample-exact segments and encoded once"
    #: loudnorm's analysis reads the whole file in one job: ~40 s for 30 minutes on one core
    default_timeout = 1800.0
    unit = "seconds"  # of audio, at the output's sample rate

    def available(self) -> str | None:
        try:
            ffmpeg.run(["-version"])
        except (ffmpeg.FfmpegMissing, ffmpeg.FfmpegFailed, OSError) as exc:
            return f"ffmpeg is not usable: {exc}"
        return None

    def configure(self, settings: SettingsReader) -> dict[str, Any]:
        return read_settings(settings)

    def renderer_facts(self, settings: Mapping[str, Any]) -> Mapping[str, Any]:
        # what ffmpeg found (farm_audio.facts): a controller derives the same settings from them
        return settings["probed"]

    def count(self, project: Project) -> int:
        s = project.settings
        return count_segments(s["samples"], s["segment"]) + (s["loudnorm"] is not None)

    def units(self, job: Job, project: Project) -> float:
        if job.params["kind"] != "segment":
            return 0.0  # the loudness analysis renders no audio
        return (job.params["end"] - job.params["start"]) / project.settings["sample_rate"]

    def total_units(self, project: Project) -> float:
        return project.settings["samples"] / project.settings["sample_rate"]

    def split(self, project: Project) -> Iterator[Job]:
        s = project.settings
        inputs = (s["input"],)
        deps: tuple[str, ...] = ()
        if s["loudnorm"] is not None:  # first: the longest job, so it starts first
            yield Job(ANALYSIS_KEY, {"kind": "loudnorm"}, inputs=inputs)
            if not s.get("gain_at_encode"):  # settings from before it existed: False
                deps = (ANALYSIS_KEY,)
        for seg in segments_of(s):
            yield Job(seg.key, {"kind": "segment", **seg.to_params()}, inputs=inputs, deps=deps)

    def render(self, job: Job, ctx: RenderContext) -> Mapping[str, Any] | None:
        s = ctx.settings
        try:  # a controller is trusted no further than a farm.toml: same allowlist, same formats
            check_settings(s)
        except NotAllowed as exc:
            raise RenderError(f"refusing this job's audio settings: {exc}") from None
        # next to the work folder, not in it (it is emptied after every job)
        source = job_source(ctx.project_dir, s, ctx.cache, ctx.work_dir.parent)
        if job.params["kind"] == "loudnorm":
            return analyse_loudness(s, source, ctx.work_dir, ctx.progress)
        seg = Segment.from_params(job.params)
        return render_segment(s, seg, source, ctx.output_dir, ctx.work_dir, ctx.deps, ctx.progress)

    def collate(
        self, job: Job, result: Mapping[str, Any] | None, outputs: Mapping[str, Path], ctx: CollateContext
    ) -> None:
        s = ctx.project.settings
        if job.params["kind"] == "loudnorm":
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            (ctx.output_dir / f"{s['name']}.loudnorm.json").write_text(json.dumps(result, indent=2) + "\n")
            ctx.state[_ANALYSIS_KEY] = result
            # for a controller that restarts: named by the settings, so another run's never applies
            _analysis_record(ctx).write_text(json.dumps(result))
            joins = ctx.state.get(_JOIN_KEY)
            encoders = None if joins is None else self._encoders(ctx, joins)
            if encoders is not None:  # the segments that arrived before the gain was known
                encoders.advance(min(j.contiguous() for j in joins))
            return
        names = [f"{job.key}.{fmt}" for fmt in s["streams"]]
        if result is None or sorted(outputs) != sorted(names):
            raise RenderError(f"{job.key}: expected the PCM files {names} and a result, "
                              f"got {sorted(outputs)}")
        joins = self._joins(ctx, collating=True)
        for name, join in zip(names, joins, strict=True):
            staged = outputs[name]
            if staged.stat().st_size != result["samples"] * join.frame_bytes:
                raise RenderError(f"{job.key}: {staged.name} is {staged.stat().st_size} bytes, "
                                  f"not the {result['samples']} samples the job rendered")
        for name, join in zip(names, joins, strict=True):
            join.add(job.params["start"], outputs[name])
        encoders = self._encoders(ctx, joins)
        if encoders is not None:
            encoders.advance(min(j.contiguous() for j in joins))
        ctx.log.debug("joined %s: %d samples at %d", job.key, result["samples"], job.params["start"])

    def _joins(self, ctx: CollateContext, *, collating: bool = False) -> list[PcmJoin]:
        """One join per stream of the segments' PCM, in the order of ``streams``."""
        joins = ctx.state.get(_JOIN_KEY)
        if joins is None:
            s = ctx.project.settings
            if collating:  # this run joins, so it encodes: an earlier finalize's record no longer applies
                finished.remove(_finished_record(ctx))
            joins = ctx.state[_JOIN_KEY] = [
                PcmJoin(ctx.output_dir / join_name(s, fmt), RAW_BYTES[fmt] * s["out_channels"],
                        fingerprint(s), s["samples"])
                for fmt in s["streams"]
            ]
            ctx.state[_SCRATCH_KEY] = Scratch(
                [p for j in joins for p in (j.path, j.ranges_path)] + [_analysis_record(ctx)])
        return joins

    def _encoders(
        self, ctx: CollateContext, joins: list[PcmJoin], *, finishing: bool = False
    ) -> Encoders | None:
        """The outputs' encoders, started with the first segment and fed as the join fills.

        None while they wait for loudnorm's analysis (when they apply its gain).
        """
        encoders = ctx.state.get(_ENCODERS_KEY)
        if encoders is None:
            s = ctx.project.settings
            af = ""
            if s.get("gain_at_encode"):
                measured = self._analysis(ctx)
                if measured is None:
                    if finishing:
                        raise RenderError(f"cannot finish {s['name']}: loudnorm's analysis never arrived")
                    return None
                af = encode_filter(s, measured)
            outputs = [encode.Output.from_wire(o) for o in s["outputs"]]
            streams = [(j.path, fmt, j.frame_bytes) for j, fmt in zip(joins, s["streams"], strict=True)]
            encoders = ctx.state[_ENCODERS_KEY] = Encoders(
                streams, s["sample_rate"], s["out_layout"], outputs, ctx.output_dir, s["name"], af)
        return encoders

    def preview(self, ctx: PreviewContext) -> Mapping[str, Any]:
        return preview.describe(ctx, join_name(ctx.settings), fingerprint(dict(ctx.settings)))

    def _analysis(self, ctx: CollateContext) -> Mapping[str, Any] | None:
        """loudnorm's measurements: collated in this run, or (a controller that restarted) from its file."""
        found = ctx.state.get(_ANALYSIS_KEY)
        if found is None:
            try:
                found = json.loads(_analysis_record(ctx).read_text())
            except (OSError, ValueError):
                return None
            if not isinstance(found, dict) or not all(isinstance(found.get(k), str) for k in MEASURED):
                return None
            ctx.state[_ANALYSIS_KEY] = found
        return found

    def finalize(self, ctx: CollateContext) -> list[Path]:
        """The outputs (and ``<name>.loudnorm.json``); raises `RenderError` (a range missing, the
        encoder failed). A run with failed jobs encodes nothing and returns [], removing an
        earlier run's outputs (`farm_audio.failedrun`); their errors say why."""
        joins = self._joins(ctx)
        scratch: Scratch = ctx.state[_SCRATCH_KEY]
        if ctx.failed:
            self._abort(ctx)
            scratch.remove_when_dropped()  # `farm retry` may run those jobs again: it needs what is joined
            failedrun.leave(ctx, segments_of(ctx.project.settings), ANALYSIS_KEY)
            return []
        try:
            paths = self._finish(ctx, joins)
        except RenderError as exc:  # the encoder failed, or audio is missing: the run made no outputs
            self._abort(ctx)
            self._end(ctx)
            note = removal_note(*failedrun.remove_outputs(ctx, ANALYSIS_KEY), lead=";")
            if note:
                raise RenderError(f"{exc}{note}") from None
            raise
        except BaseException:
            self._abort(ctx)
            self._end(ctx)
            raise
        # the record stays until the run's end is journaled: a finalize run again needs it
        record = _finished_record(ctx)
        ctx.state[_RECORD_KEY] = Scratch([record, record.with_name(record.name + ".part")])
        ctx.state[_RECORD_KEY].remove_when_dropped()
        self._end(ctx)  # after the record: the joins are needed until the outputs are recorded
        s = ctx.project.settings
        analysis = ctx.output_dir / f"{s['name']}.loudnorm.json"
        outputs = [*paths, analysis] if s["loudnorm"] is not None and analysis.is_file() else paths
        dropped.replace(ctx, outputs)  # an earlier run's mp3 after this one dropped mp3 would look current
        return outputs

    def _abort(self, ctx: CollateContext) -> None:
        """Stop the encoders, if they started, and remove what they wrote."""
        encoders = ctx.state.pop(_ENCODERS_KEY, None)
        if encoders is not None:
            encoders.abort()

    def _end(self, ctx: CollateContext) -> None:
        """The run is over: its joins leave the state and their files are removed."""
        ctx.state.pop(_JOIN_KEY, None)
        ctx.state.pop(_SCRATCH_KEY).remove()

    def _finish(self, ctx: CollateContext, joins: list[PcmJoin]) -> list[Path]:
        """Check every range arrived, then let the encoders finish; raises `RenderError` (why not)."""
        s = ctx.project.settings
        expected = [(seg.start, seg.samples, seg.last and s["tail"]) for seg in segments_of(s)]
        try:
            totals = {join.check(expected) for join in joins}
            if len(totals) != 1:
                raise JoinError(f"the streams end at different samples: {sorted(totals)}")
            total = totals.pop()
        except JoinError as exc:
            # a finalize that ended before (its joins removed, the controller stopped before it
            # journaled the run's end): the outputs it recorded
            done = finished.read(_finished_record(ctx))
            if done is None:
                raise RenderError(f"cannot finish {s['name']}: {exc}") from None
            ctx.log.info("%s: the outputs of an earlier finalize of this run are kept", s["name"])
            return done
        ctx.log.info("joined %d samples (%d input, %d of tail)", total, s["samples"], total - s["samples"])
        encoders = self._encoders(ctx, joins, finishing=True)  # a controller that restarted starts them here
        assert encoders is not None
        ctx.state.pop(_ENCODERS_KEY, None)
        try:
            paths = encoders.finish(total)
        except ffmpeg.FfmpegFailed as exc:
            raise RenderError(f"encoding failed: {exc.message}") from None
        finished.write(_finished_record(ctx), paths)
        return paths
