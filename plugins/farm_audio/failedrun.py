"""What the finalize of a run with jobs that failed for good (or whose encoder failed) leaves.

Such a run encodes nothing: its audio has a gap, or lacks loudnorm's gain. The outputs an
earlier run left under the same names would look like this run's (the embedded farm and a
controller finalize in the project's own output folder; a remote run's downloads are
`farm.outputrecord`'s), so they are removed: only audio's own final outputs, ``<name>.<ext>``
for every format audio writes (an earlier run may have had other outputs) and
``<name>.loudnorm.json`` unless this run's analysis wrote it, never the input. One warning
names the failed audio in seconds and samples, and what was removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from pathlib import Path
from typing import Any

from farm.mediatype import CollateContext
from farm.outputrecord import remove_earlier
from farm_audio.encode import EXTENSIONS
from farm_audio.segments import Segment

#: failed ranges a warning lists before it says how many more
_SHOWN = 5


def leave(ctx: CollateContext, segments: Iterable[Segment], analysis_key: str) -> None:
    """Remove the earlier run's final outputs and log one warning saying why and which."""
    s = ctx.project.settings
    removed = remove_outputs(ctx, analysis_key)
    ctx.log.warning("%s: nothing encoded: %s failed (%d of %d jobs)%s", ctx.project.name,
                    what_failed(ctx.failed, segments, s["sample_rate"], analysis_key),
                    len(ctx.failed), len(ctx.failed) + len(ctx.done),
                    f", removed the earlier run's {', '.join(removed)}" if removed else "")


def remove_outputs(ctx: CollateContext, analysis_key: str) -> list[str]:
    """Remove the final outputs an earlier run left (a run that encodes nothing: failed jobs, or
    an encoder that failed); their names."""
    s = ctx.project.settings
    return remove_earlier(earlier_outputs(ctx.output_dir, s, ctx.project.root / s["input"],
                                          analysis_key in ctx.done))


def earlier_outputs(
    output_dir: Path, settings: Mapping[str, Any], source: Path, analysed: bool
) -> list[Path]:
    """The final outputs an earlier run of this name may have left (``analysed``: this run's
    loudnorm analysis was collated, so ``<name>.loudnorm.json`` is this run's)."""
    name = settings["name"]
    own = [out["extension"] for out in settings["outputs"]]  # this run's first, as its outputs list them
    paths = [output_dir / f"{name}.{ext}" for ext in [*own, *(e for e in EXTENSIONS if e not in own)]]
    if not (analysed and settings["loudnorm"] is not None):
        paths.append(output_dir / f"{name}.loudnorm.json")
    # never the input, which load refuses in the output folder (`SettingsReader.asset`): kept as a guard
    return [p for p in paths if p.resolve() != source.resolve()]


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
