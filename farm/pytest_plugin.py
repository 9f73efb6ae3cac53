"""pytest fixtures for plugin authors, loaded through farm's ``pytest11`` entry point.

With farm installed, every pytest run has them (``-p no:farm`` turns them off):

- `farm_project`: a factory that copies a project folder (or writes a new ``farm.toml``)
  into the test's temporary folder, so outputs never land in your source tree;
- `farm_embedded`: a factory that starts a controller in this process and N real agent
  processes (an `farm.embedded.EmbeddedFarm`), stopped when the test ends.

::

    def test_on_real_agents(farm_project, farm_embedded):
        project = farm_project("project")               # a copy, in tmp_path
        farm = farm_embedded(agents=2)
        summary = farm.submit(load_project(project))
        assert summary.ok, summary.failures
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from farm.project import PROJECT_FILE, STATE_DIR


def copy_project(source: Path | str, dest: Path) -> Path:
    """Copy the project folder ``source`` to ``dest`` (which must not exist), without its
    outputs (``output/``) and farm state (``.farm/``); returns ``dest``."""
    return Path(shutil.copytree(source, dest, ignore=shutil.ignore_patterns("output", STATE_DIR)))


def write_project(dest: Path, media_type: str, settings: Mapping[str, Any], *, name: str = "test") -> Path:
    """Write ``dest/farm.toml`` for ``media_type`` with the ``[media_type]`` table ``settings``.

    :param settings: str, int, float, bool, or lists of those (TOML scalars and arrays).
    :raises TypeError: a value of another type.
    """
    lines = ["[project]", f"name = {json.dumps(name)}", f"media_type = {json.dumps(media_type)}", "",
             f"[{media_type}]"]
    lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / PROJECT_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)  # JSON's numbers and strings are valid TOML
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as a TOML value")


@pytest.fixture
def farm_project(tmp_path: Path) -> Callable[..., Path]:
    """A factory: ``farm_project(source)`` copies a project folder into ``tmp_path``;
    ``farm_project(media_type=..., settings={...})`` writes a new one. Returns its folder.
    Each call gives a new folder (``project``, ``project-2``, ...)."""
    made: list[Path] = []

    def make(source: Path | str | None = None, *, media_type: str | None = None,
             settings: Mapping[str, Any] | None = None, name: str = "test") -> Path:
        dest = tmp_path / ("project" if not made else f"project-{len(made) + 1}")
        made.append(dest)
        if source is not None:
            return copy_project(source, dest)
        if media_type is None:
            raise TypeError("farm_project needs a source folder or a media_type")
        return write_project(dest, media_type, settings or {}, name=name)

    return make


@pytest.fixture
def farm_embedded(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A factory: ``farm_embedded(agents=2)`` starts an `farm.embedded.EmbeddedFarm` (a
    controller in this process, ``agents`` local agent processes; its state in ``tmp_path``)
    and returns it; ``.submit(project)`` renders a loaded `farm.project.Project` and returns
    its `farm.summary.Summary`. Every farm started is stopped, and its agents ended, at teardown."""
    from farm.embedded import EmbeddedFarm  # imported late: only tests that use it pay for it

    started: list[EmbeddedFarm] = []
    with ExitStack() as stack:

        def start(agents: int = 1) -> EmbeddedFarm:
            farm = stack.enter_context(EmbeddedFarm(tmp_path / f"farm-state-{len(started) + 1}", agents))
            started.append(farm)
            return farm

        yield start
