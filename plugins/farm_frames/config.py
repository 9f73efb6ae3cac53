"""Reading and checking a project's ``[frames]`` and ``[frames.video]`` tables."""

from __future__ import annotations

import math
from typing import Any

from farm.errors import ProjectError
from farm.settings import SettingsReader, line_of
from farm_frames.blender import BLENDER_ENV, ENGINES
from farm_frames.framerange import FrameRangeError, frame_count, parse_frames
from farm_frames.images import FORMATS
from farm_frames.scenefiles import SceneFileError, check_blend
from farm_frames.scriptfiles import check_script
from farm_frames.video import CODECS

#: the most frames one job renders when the project does not say
MAX_DEFAULT_CHUNK = 10
#: a job should render at least this many frames, or Blender's start-up (1-2 s) dominates
MIN_DEFAULT_CHUNK = 4
#: aim for at least this many jobs, so a farm of a few nodes is kept busy to the end
TARGET_JOBS = 8


def default_chunk(frames: int) -> int:
    """Frames per job when unset: enough to be worth a Blender start-up, few enough
    that the jobs spread over a small farm (48 frames -> 6 per job, 8 jobs)."""
    spread = math.ceil(frames / TARGET_JOBS)
    return max(1, min(frames, max(MIN_DEFAULT_CHUNK, min(MAX_DEFAULT_CHUNK, spread))))


def read_settings(s: SettingsReader) -> dict[str, Any]:
    scene = s.asset("scene", suffixes=(".blend", ".py"))
    if "blender" in s.values:  # looked at, not read: it stays out of the known keys
        # An executable named by a project would run on every agent with the agent's rights.
        raise s.error(
            "blender",
            "a project cannot choose the Blender executable: each agent uses its own; remove this "
            f"key and, on the agents, set ${BLENDER_ENV} to Blender's path or put blender on PATH",
        )
    try:
        runs = parse_frames(s.get("frames"))
    except FrameRangeError as exc:
        raise s.error("frames", str(exc)) from None
    total = frame_count(runs)
    settings: dict[str, Any] = {
        "scene": scene,
        "frames": runs,
        "chunk": s.integer("chunk", default_chunk(total), min=1),
        # a chunk written in farm.toml is kept; else the controller sizes jobs from measured times
        "chunk_fixed": "chunk" in s.values,
        "engine": s.choice("engine", sorted(ENGINES), "cycles"),
        "resolution": _resolution(s),
        "samples": s.integer("samples", None, min=1, max=1 << 24),
        "seed": s.integer("seed", None, min=0, max=(1 << 31) - 1),
        "denoise": s.boolean("denoise", False),
        "format": s.choice("format", sorted(FORMATS), "png"),
        "video": _video(s),
    }
    s.finish()
    _check_scene_files(s, scene)  # last: reading a large .blend costs more than a typo check
    return settings


def _check_scene_files(s: SettingsReader, scene: str) -> None:
    """A scene must read only files that travel with the project: all of a ``.blend``'s
    (see `scenefiles`); what a script spells out (`scriptfiles`; the agent checks the rest).
    Travel means inside the project and sent by its ``[assets]`` rules (`assetrules`)."""
    rules = s.asset_rules()  # the scene file's own were checked by `asset`
    try:
        check = check_blend if scene.lower().endswith(".blend") else check_script
        problem = check(s.root, scene, rules)
    except SceneFileError as exc:
        raise s.error("scene", str(exc)) from None
    if problem:
        raise s.error("scene", problem)


def _resolution(s: SettingsReader) -> list[int] | None:
    value = s.get("resolution", None)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65536 for v in value)
    ):
        raise s.error("resolution", f"expected [width, height] in pixels (1 to 65536), got {value!r}")
    return list(value)


def _video(s: SettingsReader) -> dict[str, Any]:
    table = s.table_value("video", {})
    # A reader of its own, so errors name "[frames.video] codec" and its line.
    v = SettingsReader(table, table=f"{s.table}.video", file=s.file, text=s.text, root=s.root)
    try:
        codec = v.str("codec", "h264")
        if codec not in CODECS:
            raise v.error("codec", f"unknown codec {codec!r} (supported: {', '.join(sorted(CODECS))})")
        video = {
            "fps": v.number("fps", 24, min=0.001, max=1000),
            "codec": codec,
            "crf": v.integer("crf", CODECS[codec].default_crf, min=0, max=CODECS[codec].max_crf),
        }
        v.finish()
    except ProjectError as exc:
        if exc.line is not None:
            raise
        # an inline table (video = {...}) has no header line: point at the parent's key
        line = line_of(s.text, s.table, "video")
        raise ProjectError(exc.message, file=exc.file, key=exc.key, line=line) from None
    return video
