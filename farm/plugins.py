"""The plugin manager: loads plugins once, lazily, from the ``farm.plugins`` entry points.

Built-in media types (``plugins/farm_*``) go through the same entry-point group as
third-party ones. A plugin that fails to import is recorded and logged, never fatal:
the other media types keep working and ``farm plugins`` shows the error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from farm import hookspecs
from farm.errors import PluginError, UnknownMediaType
from farm.mediatype import MediaType

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "farm.plugins"
#: comma-separated plugin names to load (others are skipped); unset loads all
LOAD_PLUGINS_ENV = "FARM_LOAD_PLUGINS"


@dataclass
class PluginInfo:
    """One loaded plugin: its entry point's ``name``, its distribution's ``version`` and ``dist``
    name (from the package metadata; None for a plugin registered in-process)."""

    name: str
    version: str | None
    module: str
    media_types: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    dist: str | None = None


class Plugins:
    """The loaded plugins and the media types they registered."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("farm")
        self.manager.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []
        self.media_types: dict[str, MediaType] = {}
        self._owner: dict[str, str] = {}

    def load_entry_points(self) -> None:
        wanted = os.environ.get(LOAD_PLUGINS_ENV)
        allowed = {n.strip() for n in wanted.split(",") if n.strip()} if wanted is not None else None
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allowed is None or ep.name in allowed:
                self.load(ep)
        self.manager.check_pending()

    def load(self, ep: metadata.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        info = PluginInfo(name=ep.name, version=dist.version if dist else None, module=ep.value,
                          dist=dist.name if dist else None)
        self.infos.append(info)
        try:
            plugin = ep.load()
            self.register(plugin, info)
        except Exception as exc:  # a broken plugin must not take farm down
            info.error = f"{type(exc).__name__}: {exc}"
            log.error("plugin %s failed to load: %s", ep.name, info.error)

    def register(self, plugin: Any, info: PluginInfo) -> None:
        if self.manager.is_registered(plugin):
            return
        self.manager.register(plugin, name=info.name)
        info.hooks = sorted(h.name for h in self.manager.get_hookcallers(plugin) or [])
        hook = getattr(plugin, "farm_register_media_types", None)
        if hook is None:
            return

        def register_media_type(cls: type[MediaType]) -> None:
            if not (isinstance(cls, type) and issubclass(cls, MediaType)) or not cls.name:
                raise PluginError(f"plugin {info.name} registered {cls!r}, which is not a named MediaType")
            if cls.name in self.media_types:
                raise PluginError(
                    f"media type {cls.name!r} is registered by both {self._owner[cls.name]} and {info.name}"
                )
            self.media_types[cls.name] = cls()
            self._owner[cls.name] = info.name
            info.media_types.append(cls.name)

        hook(register=register_media_type)

    def get(self, name: str) -> MediaType:
        try:
            return self.media_types[name]
        except KeyError:
            installed = ", ".join(sorted(self.media_types)) or "none"
            raise UnknownMediaType(f"unknown media type {name!r} (installed: {installed})") from None

    def owner(self, name: str) -> PluginInfo:
        return next(i for i in self.infos if i.name == self._owner[name])

    def versions(self) -> dict[str, str]:
        """{media type: the version of the plugin distribution that registered it}, where known.

        An agent says this in its HELLO; the controller sends a media type's jobs only to agents
        with its own version of that plugin (`farm.controller.versions`).
        """
        found = {}
        for name in self.media_types:
            version = self.owner(name).version
            if version is not None:
                found[name] = version
        return found


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process's plugins, loaded on first use."""
    global _plugins
    if _plugins is None:
        plugins = Plugins()
        plugins.load_entry_points()
        _plugins = plugins
    return _plugins


def get_media_type(name: str) -> MediaType:
    return get_plugins().get(name)
