"""Plugin version skew: an agent whose version of a media type's plugin differs from the
controller's gets none of that media type's jobs, and status says why.

A project's settings are made by the controller's `configure` and its outputs collated by
the controller's `collate`; an agent renders with its own copy of the plugin. Two versions
may disagree on settings, params, results or output files, so the controller sends a media
type's jobs only to agents that said (in ``HELLO``'s ``plugins``) they have its own version.
An agent that says nothing (an older farm) is taken at its word as it was before.
"""

from __future__ import annotations

from typing import Any

from farm.errors import ProtocolError
from farm.plugins import get_plugins

MAX_PLUGINS = 1024  # entries in one HELLO's plugins map
MAX_TEXT = 200  # characters of a media type name or a version


def read_versions(value: Any) -> dict[str, str] | None:
    """HELLO's ``plugins`` checked: {media type: version} of short strings, or None if absent.

    Raises `ProtocolError` for anything else (a peer's claim, checked where it enters).
    """
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_PLUGINS:
        raise ProtocolError(f"HELLO: plugins must map at most {MAX_PLUGINS} media types to versions")
    for name, version in value.items():
        if not (isinstance(name, str) and isinstance(version, str)
                and 0 < len(name) <= MAX_TEXT and 0 < len(version) <= MAX_TEXT):
            raise ProtocolError(f"HELLO: plugins: {str(name)[:40]!r} -> {str(version)[:40]!r} is not a media "
                                f"type and a version of at most {MAX_TEXT} characters")
    return value


def skew(agent_id: str, versions: dict[str, str] | None, caps: set[str]) -> dict[str, str]:
    """{media type: why this agent gets none of its jobs} for the media types it renders with
    another version of the plugin than this controller's."""
    if not versions:
        return {}
    plugins = get_plugins()
    found = {}
    for name, theirs in sorted(versions.items()):
        if name not in caps or name not in plugins.media_types:
            continue
        info = plugins.owner(name)
        if info.version is not None and theirs != info.version:
            dist = info.dist or info.name
            found[name] = f"agent {agent_id} has {dist} {theirs}, the controller {info.version}"
    return found
