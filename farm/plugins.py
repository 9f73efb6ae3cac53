"""The plugin manager: loads plugins once, lazily, from the ``farm.plugins`` entry points.

Built-in media types (``plugins/farm_*``) go through the same entry-point group as
third-party ones. A plugin that fails to import is recorded and logged, never fatal:
the other media types keep working and ``farm plugins`` shows the error.

Loading is lazy and by name: asking for media type ``frames`` imports the entry point named
``frames`` first (the convention: a plugin's entry point is named for its media type), and
all the others only if that one did not register it. So a worker rendering frames, or an
agent offering only frames, never imports the map or audio plugins (each costs 0.1-0.3 s of
a process's start). Whatever needs every plugin (listing them, iterating `media_types`)
loads the rest first. Calling a hook such as ``farm_event`` on all of them (`Plugins.manager`)
loads every plugin but farm's own (`BUILTIN_DIST`): those register media types and implement
no other hook (a test holds them to it), so a controller, the embedded one in `farm submit`
included, imports only the media types its runs use.

A media type name has one provider. Two distributions with an entry point of the same name
(``farm plugin new maptiles`` installed beside farm) are both refused: each may import the same
module name, and which file that finds depends on ``sys.path``, so farm cannot tell whose code
would run. `Plugins.get` of that name raises, naming both, and `farm plugins` shows it. A plugin
that registers a media type another distribution's entry point is named for, or one a plugin
loaded before it registered, is refused whole (its other media types too), its error naming both.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from farm import hookspecs
from farm.errors import FarmError, PluginError, UnknownMediaType
from farm.mediatype import MediaType
from farm.plugincode import describe_bug
from farm.trace import mark

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "farm.plugins"
#: comma-separated plugin names to load (others are skipped); unset loads all
LOAD_PLUGINS_ENV = "FARM_LOAD_PLUGINS"
#: a media type's name: written in farm.toml, listed comma-separated in $FARM_MEDIA_TYPES, sent to agents
MEDIA_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")

#: the distribution farm's built-in plugins ship in: they implement `farm_register_media_types` only
BUILTIN_DIST = "farm"


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


class _MediaTypes(MutableMapping[str, MediaType]):
    """{name: media type}, filled as plugins load: looking a name up loads its plugin (see the
    module docstring); iterating or counting loads them all."""

    def __init__(self, plugins: Plugins) -> None:
        self._plugins = plugins
        self._found: dict[str, MediaType] = {}

    def __getitem__(self, name: str) -> MediaType:
        if name not in self._found:
            self._plugins.load_for(name)
        return self._found[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name not in self._found:
            self._plugins.load_for(name)
        return name in self._found

    def __setitem__(self, name: str, media: MediaType) -> None:
        self._found[name] = media

    def __delitem__(self, name: str) -> None:
        del self._found[name]

    def __iter__(self) -> Iterator[str]:
        self._plugins.load_all()
        return iter(dict(self._found))

    def __len__(self) -> int:
        self._plugins.load_all()
        return len(self._found)

    def loaded(self) -> dict[str, MediaType]:
        """Those registered so far, loading nothing."""
        return dict(self._found)


class Plugins:
    """The plugins and the media types they registered, loaded as they are asked for.

    `media_types`, `infos` and `manager` hold every plugin once read (a lookup by name
    loads only what it needs; the others load everything first). Entry points come from
    ``load_entry_points`` (or are loaded one by one with `load`); only
    ``$FARM_LOAD_PLUGINS`` (comma-separated names) narrows them.
    """

    def __init__(self) -> None:
        self._manager = pluggy.PluginManager("farm")
        self._manager.add_hookspecs(hookspecs)
        self._infos: list[PluginInfo] = []
        self.media_types = _MediaTypes(self)
        self._owner: dict[str, PluginInfo] = {}
        self._pending: dict[str, metadata.EntryPoint] = {}  # listed, not loaded yet
        self._claimed: dict[str, metadata.EntryPoint] = {}  # every entry point installed, by name
        self._clashes: dict[str, str] = {}  # {entry-point name two distributions have: why neither loads}
        # threads (the controller's loop, the HTTP API, a client) may ask at once: one loads,
        # the others wait for it rather than miss a plugin that is half loaded
        self._loading = threading.RLock()

    @property
    def manager(self) -> pluggy.PluginManager:
        """The pluggy manager, every plugin that may implement a hook loaded first (a hook is
        called on all of them): all but farm's own, which load when their media type is asked for."""
        self.load_all(builtin=False)
        return self._manager

    @property
    def infos(self) -> list[PluginInfo]:
        """Every plugin, loaded or failed (this loads all of them)."""
        self.load_all()
        return self._infos

    @infos.setter
    def infos(self, value: list[PluginInfo]) -> None:
        self._infos = value

    def load_entry_points(self, *, lazy: bool = False) -> None:
        """List the ``farm.plugins`` entry points; load them now, or (``lazy``) as asked for.

        A name that two distributions' entry points share loads neither: both are listed in
        `infos` with the error (reading metadata only, importing nothing).
        """
        wanted = os.environ.get(LOAD_PLUGINS_ENV)
        allowed = {n.strip() for n in wanted.split(",") if n.strip()} if wanted is not None else None
        by_name: dict[str, list[metadata.EntryPoint]] = {}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            by_name.setdefault(ep.name, []).append(ep)
            self._claimed.setdefault(ep.name, ep)
        for name, eps in by_name.items():
            if allowed is not None and name not in allowed:
                continue
            if len(eps) == 1:
                self._pending.setdefault(name, eps[0])
                continue
            why = (f"media type {name!r} is provided by {len(eps)} distributions, so farm loads none of "
                   f"them: {' and '.join(provider(ep) for ep in eps)}; uninstall or rename all but one")
            self._clashes[name] = why
            for ep in eps:
                self._infos.append(_info(ep, error=why))
        if not lazy:
            self.load_all()

    def load_for(self, media_type: str) -> None:
        """Load what registers ``media_type``: the entry point of that name, else all the others."""
        with self._loading:
            if media_type in self.media_types.loaded():  # another thread loaded it meanwhile
                return
            ep = self._pending.pop(media_type, None)
            if ep is not None:
                self._load_pending(ep)
                if media_type in self.media_types.loaded():
                    return
            self.load_all()

    def load_all(self, *, builtin: bool = True) -> None:
        """Load every entry point not loaded yet (without ``builtin``: but farm's own)."""
        with self._loading:
            for name in sorted(self._pending):
                ep = self._pending[name]
                if builtin or _dist_name(ep) != BUILTIN_DIST:
                    del self._pending[name]
                    self._load_pending(ep)

    def _load_pending(self, ep: metadata.EntryPoint) -> None:
        self.load(ep)
        self._manager.check_pending()
        mark(f"plugin {ep.name} loaded")

    def load(self, ep: metadata.EntryPoint) -> None:
        info = _info(ep)
        self._infos.append(info)
        try:
            plugin = ep.load()
            self.register(plugin, info)
        except Exception as exc:  # a broken plugin must not take farm down
            # farm's own refusals explain themselves; a bug in the plugin is shown where it is
            own = isinstance(exc, FarmError)
            info.error = f"{type(exc).__name__}: {exc}" if own else describe_bug(exc, ep.module)
            log.error("plugin %s failed to load: %s", ep.name, info.error)

    def register(self, plugin: Any, info: PluginInfo) -> None:
        """Register ``plugin`` and the media types its hook registers, all or nothing.

        :raises PluginError: it registers something not a named `MediaType`, or a media type
            name another plugin has (loaded before it, or an entry point named for it).
        """
        if self._manager.is_registered(plugin):
            return
        self._manager.register(plugin, name=info.name)
        info.hooks = sorted(h.name for h in self._manager.get_hookcallers(plugin) or [])
        hook = getattr(plugin, "farm_register_media_types", None)
        if hook is None:
            return

        def register_media_type(cls: type[MediaType]) -> None:
            if not (isinstance(cls, type) and issubclass(cls, MediaType)) or not cls.name:
                raise PluginError(f"plugin {info.name} registered {cls!r}, which is not a named MediaType")
            if not isinstance(cls.name, str) or not MEDIA_TYPE_NAME.fullmatch(cls.name):
                raise PluginError(f"plugin {info.name} registered a media type named {cls.name!r}: a name "
                                  "is a letter, then up to 63 letters, digits, '_', '-' or '.' (it is "
                                  "written in farm.toml, listed in $FARM_MEDIA_TYPES with commas)")
            other = self._other_provider(cls.name, info)
            if other is not None:
                raise PluginError(f"media type {cls.name!r} belongs to {other}; {describe(info)} registers "
                                  "it too, so it was refused: rename its media type or uninstall one")
            self.media_types[cls.name] = cls()
            self._owner[cls.name] = info
            info.media_types.append(cls.name)

        try:
            hook(register=register_media_type)
        except Exception:  # refused whole: nothing of it stays registered
            for name in info.media_types:
                del self.media_types[name], self._owner[name]
            info.media_types = []
            self._manager.unregister(plugin)
            raise

    def _other_provider(self, name: str, info: PluginInfo) -> str | None:
        """Who else provides media type ``name`` (described), if anyone does."""
        if name in self.media_types.loaded():  # `in` alone would load plugins: we are loading one
            return describe(self._owner[name])
        ep = self._claimed.get(name)
        if ep is not None and name != info.name:  # an entry point named for it is its provider
            return provider(ep)
        return None

    def get(self, name: str) -> MediaType:
        """The media type ``name``, loading its plugin if need be.

        :raises UnknownMediaType: no plugin provides it, or two distributions do (the message
            names both).
        """
        if name in self._clashes:
            raise UnknownMediaType(self._clashes[name])
        try:
            return self.media_types[name]
        except KeyError:
            broken = next((i for i in self._infos if i.name == name and i.error), None)
            if broken is not None:  # its plugin is there but did not load: "unknown" would mislead
                raise UnknownMediaType(f"media type {name!r} is not loaded: its plugin {describe(broken)} "
                                       f"failed to load: {broken.error}") from None
            installed = ", ".join(sorted(self.media_types)) or "none"
            raise UnknownMediaType(f"unknown media type {name!r} (installed: {installed})") from None

    def owner(self, name: str) -> PluginInfo:
        """The plugin that registered media type ``name`` (loading it if need be)."""
        self.get(name)
        return self._owner[name]

    def versions(self) -> dict[str, str]:
        """{media type: the version of the plugin distribution that registered it}, where known,
        for the media types loaded so far (an agent that offers only some loads only theirs).

        An agent says this in its HELLO; the controller sends a media type's jobs only to agents
        with its own version of that plugin (`farm.controller.versions`).
        """
        found = {}
        for name in self.media_types.loaded():
            version = self.owner(name).version
            if version is not None:
                found[name] = version
        return found


def provider(ep: metadata.EntryPoint) -> str:
    """Who provides entry point ``ep``, for messages: ``farm-thumbs 0.1.0 (thumbs = farm_thumbs)``."""
    return describe(_info(ep))


def describe(info: PluginInfo) -> str:
    """A plugin, for messages: ``farm-thumbs 0.1.0 (thumbs = farm_thumbs)`` (no distribution: the
    entry point alone)."""
    where = f"{info.dist} {info.version} " if info.dist else ""
    return f"{where}({info.name} = {info.module})"


def _info(ep: metadata.EntryPoint, error: str | None = None) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    return PluginInfo(name=ep.name, version=dist.version if dist else None, module=ep.value,
                      dist=dist.name if dist else None, error=error)


def _dist_name(ep: metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else None


_plugins: Plugins | None = None
_lock = threading.Lock()


def get_plugins() -> Plugins:
    """The process's plugins: their entry points listed on first use, each loaded when needed."""
    global _plugins
    with _lock:
        if _plugins is None:
            plugins = Plugins()
            plugins.load_entry_points(lazy=True)
            _plugins = plugins
    return _plugins


def get_media_type(name: str) -> MediaType:
    return get_plugins().get(name)


def event_observer() -> Callable[[Any], None] | None:
    """The plugins' `farm_event` hook as a controller's event observer (called with each `Event`),
    or None if no plugin implements it."""
    hook = get_plugins().manager.hook.farm_event
    if not hook.get_hookimpls():
        return None
    return lambda event: hook(event=event)
