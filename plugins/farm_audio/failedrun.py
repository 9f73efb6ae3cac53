"""What the finalize of a run with jobs that failed for good (or whose encoder failed) leaves.

Such a run encodes nothing: its audio has a gap, or lacks loudnorm's gain. The outputs an
earlier run left would look like this run's (the embedded farm and a controller finalize in
the project's own output folder; a remote run's downloads are `farm.outputrecord`'s), so those
an earlier run recorded writing (`farm_audio.dropped`'s record) are removed if they are still
the files it wrote, but ``<name>.loudnorm.json`` if this run's analysis wrote it. A file the
record does not name stays, even under an output's name (``<name>.<ext>`` for a format audio
writes: the user's own), as does one changed since; never the input. One warning names the
failed audio in seconds and samples, what was removed, and such a file that was kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from pathlib import Path
from typing import Any

from farm.mediatype import CollateContext
from farm.outputrecord import removal_note, remove_recorded
from farm_audio.dropped import RECORD
from farm_audio.encode import EXTENSIONS
from farm_audio.segments import Segment

#: failed ranges a warning lists before it says how many more
_SHOWN = 5


def leave(ctx: CollateContext, segments: Iterable[Segment], analysis_key: str) -> None:
    """Remove the earlier run's final outputs and log one warning saying why and which."""
    s = ctx.project.settings
    removed, kept = remove_outputs(ctx, analysis_key)
    ctx.log.warning("%s: nothing encoded: %s failed (%d of %d jobs)%s", ctx.project.name,
                    what_failed(ctx.failed, segments, s["sample_rate"], analysis_key),
                    len(ctx.failed), len(ctx.failed) + len(ctx.done), removal_note(removed, kept))


def remove_outputs(ctx: CollateContext, analysis_key: str) -> tuple[list[str], list[str]]:
    """Remove the final outputs an earlier run recorded writing (a run that encodes nothing:
    failed jobs, or an encoder that failed); (removed, kept): `farm.outputrecord.remove_recorded`."""
    s = ctx.project.settings
    analysis = ctx.output_dir / f"{s['name']}.loudnorm.json"
    ours = analysis_key in ctx.done and s["loudnorm"] is not None and analysis.is_file()
    return remove_recorded(ctx.project, RECORD, output_names(ctx.output_dir, s),
                           [analysis] if ours else [])


def output_names(output_dir: Path, settings: Mapping[str, Any]) -> list[Path]:
    """The names audio gives its final outputs under this run's name, in every format it writes
    and ``<name>.loudnorm.json``: such a file that no run recorded writing is named as kept."""
    name = settings["name"]
    return [*(output_dir / f"{name}.{ext}" for ext in EXTENSIONS), output_dir / f"{name}.loudnorm.json"]


def what_failed(failed: Set[str], segments: Iterable[Segment], rate: int, analysis_key: str) -> str:
    """``loudnorm's analysis and the audio at 1-1.5 s, 3-4 s (samples 48000-72000, ...)``."""
    ranges: list[list[int]] = []
    for seg in segments:  # in order: adjacent failed segments make one range
        if seg.key not in failed:
            continue
        if ranges and ranges[-1][1] == seg.start:
            ranges[-1][1] = seg.end
        else:
            ranges.append([seg.start, seg.end])
    parts = ["loudnorm's analysis"] if analysis_key in failed else []
    if ranges:
        more = f" (and {len(ranges) - _SHOWN} more)" if len(ranges) > _SHOWN else ""
        shown = ranges[:_SHOWN]
        seconds = ", ".join(f"{_seconds(a, rate)}-{_seconds(b, rate)} s" for a, b in shown)
        samples = ", ".join(f"{a}-{b}" for a, b in shown)
        parts.append(f"the audio at {seconds}{more} (samples {samples})")
    return " and ".join(parts) or f"{len(failed)} jobs"


def _seconds(sample: int, rate: int) -> str:
    return f"{sample / rate:.3f}".rstrip("0").rstrip(".")
