"""The hooks a farm plugin can implement.

A plugin is any module or object registered under the ``farm.plugins`` entry-point
group; built-in media types are plugins of exactly the same kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from farm.mediatype import MediaType

hookspec = pluggy.HookspecMarker("farm")
hookimpl = pluggy.HookimplMarker("farm")


@hookspec
def farm_register_media_types(register: Callable[[type[MediaType]], None]) -> None:
    """Register the media types this plugin provides.

    :param register: call it once per `farm.mediatype.MediaType` subclass. A name
        registered twice is an error that names both plugins.

    Called once per process, when media types are first needed.
    """
