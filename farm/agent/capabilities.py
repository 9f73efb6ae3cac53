"""What this node can render: media types whose renderer is installed, plus user tags."""

from __future__ import annotations

import logging

from farm.plugins import get_plugins

log = logging.getLogger(__name__)


def detect(tags: list[str]) -> tuple[list[str], dict[str, str], frozenset[str]]:
    """(capabilities, {media type: why it is unavailable}, the media types this node renders).

    Only the last are advertised as renderable: a tag that happens to name a media type does
    not make this node accept its jobs.
    """
    caps: list[str] = []
    available: set[str] = set()
    missing: dict[str, str] = {}
    for name, media in sorted(get_plugins().media_types.items()):
        try:
            reason = media.available()
        except Exception as exc:  # a crashing check means we cannot render it
            reason = f"availability check failed: {exc!r}"
        if reason is None:  # available() checked its renderer, so it meets its own requirements
            caps += [name, *media.requirements]
            available.add(name)
        else:
            missing[name] = reason
            log.info("media type %s unavailable on this node: %s", name, reason)
    return sorted(set(caps) | set(tags)), missing, frozenset(available)
