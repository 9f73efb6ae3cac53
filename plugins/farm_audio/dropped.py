"""The outputs an earlier run of the project wrote that a successful run no longer writes.

A run that drops a format (``outputs = ["flac"]`` after ``["flac", "mp3"]``), or is renamed,
would leave the earlier run's ``episode.mp3`` beside its own outputs, looking current. So
every successful finalize records its outputs (each file's name, size and modification time)
in the project's state folder (`RECORD`), and removes those the previous record names that
this run did not write, if each is still the file recorded: one the user changed or replaced
since stays, as does any file audio did not write (`farm.outputrecord.replace_recorded`, the
rule a remote run's downloads and frames' videos follow). One warning names what was
removed. A failed run removes what this record names (`farm_audio.failedrun`).
"""

from __future__ import annotations

from pathlib import Path

from farm.mediatype import CollateContext
from farm.outputrecord import replace_outputs

#: in the project's state folder (``.farm/``); one per project, whatever its output name
RECORD = "audio-outputs.json"


def replace(ctx: CollateContext, outputs: list[Path]) -> list[str]:
    """Remove the outputs the previous successful run recorded and ``outputs`` (this run's, in
    ``ctx.output_dir``) does not name, then record these; the removed names (a warning says so)."""
    return replace_outputs(ctx, RECORD, outputs)
