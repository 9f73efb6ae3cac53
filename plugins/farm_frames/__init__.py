"""The ``frames`` media type: video frames rendered by Blender on the farm's agents.

Modules: `framerange` (frame lists), `config` (the ``[frames]`` table), `scenefiles`
(the files a ``.blend`` reads) and `scriptfiles` (the paths a scene script spells out),
`blender` (finding Blender, its command line), `blender_setup` (runs inside Blender),
`process` (running it), `progress` (reading its log), `images` (checking frames),
`ffmpeg` and `video` (the video and contact sheet), `media` (the MediaType).
"""

from __future__ import annotations

from collections.abc import Callable

from farm.hookspecs import hookimpl
from farm.mediatype import MediaType
from farm_frames.media import Frames

__version__ = "1.0.0"
__all__ = ["Frames"]


@hookimpl
def farm_register_media_types(register: Callable[[type[MediaType]], None]) -> None:
    register(Frames)
