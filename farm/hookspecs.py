"""The hooks a farm plugin can implement.

A plugin is any module or object registered under the ``farm.plugins`` entry-point
group; built-in media types are plugins of exactly the same kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from farm.controller.events import Event
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


@hookspec
def farm_event(event: Event) -> None:
    """Observe the controller's event stream (`farm.controller.events`), in the controller process.

    :param event: one `farm.controller.events.Event` (``seq``, ``time``, ``type``, ``run``,
        ``job``, ``agent``, ``data``); every event, in order.

    Called from the controller's observer thread, never its loop: a slow implementation delays
    only other observers, and one that raises is logged and skipped.
    """
