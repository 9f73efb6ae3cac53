"""The frames live preview: a filmstrip of the latest frames collated (see `farm.preview`).

PNG frames are shown as they are; EXR frames have no browser preview (decoding them would
take a library farm does not ship), so the page says how many are in instead. Once the run
is finalized, its contact sheet is shown beside the strip.
"""

from __future__ import annotations

import heapq
from typing import Any

from farm.preview import PreviewContext

STRIP = 8  # frames in the filmstrip
SCAN_LIMIT = 100_000  # folder entries looked at per call: bounds the work on a huge sequence


def describe(ctx: PreviewContext, frames_dir: str, contact_sheet: str) -> dict[str, Any]:
    """The ``images`` description of the newest ``STRIP`` frames in ``frames_dir`` (by the time
    they were collated), oldest first; ``contact_sheet`` is a file name in the output folder."""
    fmt = ctx.settings["format"]
    suffix = f".{fmt}"
    seen = 0
    newest: list[tuple[int, str]] = []  # a min-heap of (mtime, name): the STRIP newest
    for entry in ctx.files(frames_dir):
        if not entry.name.startswith("frame_") or not entry.name.endswith(suffix):
            continue  # a partial copy (".frame_....partial") or a stray file
        seen += 1
        item = (entry.stat(follow_symlinks=False).st_mtime_ns, entry.name)
        if len(newest) < STRIP:
            heapq.heappush(newest, item)
        else:
            heapq.heappushpop(newest, item)
        if seen >= SCAN_LIMIT:
            break
    if fmt != "png":
        return {"kind": "message", "text": f"{seen} {fmt.upper()} frames collated; "
                                           f"{fmt.upper()} frames have no browser preview"}
    preview: dict[str, Any] = {"kind": "images", "count": seen,
                               "files": [f"{frames_dir}/{name}" for _, name in sorted(newest)]}
    if any(entry.name == contact_sheet for entry in ctx.files()):
        preview["poster"] = contact_sheet
    return preview
