"""What this node can render: media types whose renderer is installed, plus user tags.

Each media type's `available()` checks its renderer (a file on PATH, ``ffmpeg -version``,
``import mapnik``). An agent runs these checks once, at start:

- only for the media types it offers: all installed, or those named in ``$FARM_MEDIA_TYPES``
  (``farm agent --media-type``), so an embedded farm's agents, which serve one project,
  neither import nor probe the other plugins;
- at the same time, each in its own thread, so the slowest check sets the wait rather than
  the sum; a check that has not answered after `PROBE_TIMEOUT_S` marks its media type
  unavailable instead of holding the agent back for ever.

Why not cache the answers on disk, keyed by the renderer's path, size and mtime: `available()`
is each plugin's own code and may check more than one binary (a library found by the dynamic
loader, a Python module, a licence or GPU driver), which a key the core builds cannot see; a
stale answer would advertise a renderer that is gone (jobs fail on this node) or hide one that
was installed. Run in parallel the checks cost what the slowest costs (tens of milliseconds
here), once per agent start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable

from farm.plugins import get_plugins
from farm.trace import mark

log = logging.getLogger(__name__)

#: comma-separated media types this agent offers (`farm agent --media-type`); unset: all installed
MEDIA_TYPES_ENV = "FARM_MEDIA_TYPES"
PROBE_TIMEOUT_S = 60.0  # a renderer check that takes longer counts as failed


def offered() -> list[str] | None:
    """The media types named in ``$FARM_MEDIA_TYPES``, or None (offer all installed)."""
    value = os.environ.get(MEDIA_TYPES_ENV)
    if value is None or not value.strip():
        return None
    return sorted({name.strip() for name in value.split(",") if name.strip()})


def detect(tags: list[str], only: Iterable[str] | None = None,
           timeout: float = PROBE_TIMEOUT_S) -> tuple[list[str], dict[str, str], frozenset[str]]:
    """(capabilities, {media type: why it is unavailable}, the media types this node renders).

    ``only``: the media types to offer (default `offered()`, else every installed one); a name
    no plugin registers is reported unavailable. Only the last are advertised as renderable: a
    tag that happens to name a media type does not make this node accept its jobs.
    """
    plugins = get_plugins()
    names = list(only) if only is not None else offered()
    missing: dict[str, str] = {}
    media = {}
    for name in sorted(plugins.media_types) if names is None else names:
        if name in plugins.media_types:  # loads only that plugin, where its entry point has its name
            media[name] = plugins.media_types[name]
        else:
            missing[name] = "no installed plugin provides it"
    reasons = _probe_all(media, timeout)
    caps: list[str] = []
    available: set[str] = set()
    for name, reason in sorted(reasons.items()):
        if reason is None:  # available() checked its renderer, so it meets its own requirements
            caps += [name, *media[name].requirements]
            available.add(name)
        else:
            missing[name] = reason
    for name, reason in sorted(missing.items()):
        log.info("media type %s unavailable on this node: %s", name, reason)
    mark("agent: renderers probed")
    return sorted(set(caps) | set(tags)), missing, frozenset(available)


def _probe_all(media: dict, timeout: float) -> dict[str, str | None]:
    """{name: None if available, else why not}, every `available()` in its own daemon thread
    (a hung one is left behind, and does not keep the process from exiting)."""
    reasons: dict[str, str | None] = {}

    def probe(name: str) -> None:
        try:
            reasons[name] = media[name].available()
        except Exception as exc:  # a crashing check means we cannot render it
            reasons[name] = f"availability check failed: {exc!r}"

    threads = [threading.Thread(target=probe, args=(name,), name=f"farm-probe-{name}", daemon=True)
               for name in media]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    found = dict(reasons)  # a late answer from a hung check changes nothing now
    for name in media:
        if name not in found:
            found[name] = f"availability check did not answer within {timeout:g} s"
    return found
