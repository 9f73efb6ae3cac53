"""farm: a plugin-based distributed render farm.

The public API (everything else is internal and may change between versions):

- writing a media type: `MediaType`, `Job`, `RenderContext`, `CollateContext`, `ChunkAdvisor`,
  `PreviewContext` (the dashboard's live preview, `MediaType.preview`), `hookimpl`,
  `SettingsReader` (a plugin's settings), `resolve_inside` and `UnsafePath` (paths from a project);
- projects: `Project`, `load_project`;
- errors, one hierarchy under `FarmError`: `ProjectError`, `RenderError`, `JobFailedForGood`,
  `RendererMissing`, `PluginError`, `ConnectionLost`;
- embedding farm (imported on first use): `submit` (to a running controller), `submit_embedded`
  (an in-process farm), `Summary` (a run's end), `Event` (one event of a controller's stream).

Plugins that import from the modules (``farm.mediatype``, ``farm.errors``, ...) keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from farm.errors import (
    ConnectionLost,
    FarmError,
    JobFailedForGood,
    PluginError,
    ProjectError,
    RendererMissing,
    RenderError,
)
from farm.hookspecs import hookimpl
from farm.mediatype import ChunkAdvisor, CollateContext, Job, MediaType, RenderContext
from farm.paths import UnsafePath, resolve_inside
from farm.preview import PreviewContext
from farm.project import Project, load_project
from farm.settings import SettingsReader

if TYPE_CHECKING:
    from farm.client import Summary, submit
    from farm.controller.events import Event
    from farm.embedded import submit_embedded

_LAZY = {"submit": "farm.client", "Summary": "farm.client", "submit_embedded": "farm.embedded",
         "Event": "farm.controller.events"}  # they pull in ZeroMQ and the file synchroniser

__all__ = [
    "ChunkAdvisor", "CollateContext", "ConnectionLost", "Event", "FarmError", "Job", "JobFailedForGood",
    "MediaType", "PluginError", "PreviewContext", "Project", "ProjectError", "RenderContext", "RenderError",
    "RendererMissing",
    "SettingsReader", "Summary", "UnsafePath", "__version__", "hookimpl", "load_project", "resolve_inside",
    "submit", "submit_embedded",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'farm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
