"""farm.testing.run_local crosses the farm's real boundaries, and farm.pytest_plugin's fixtures work.

The media types here are tiny, each breaking one contract a real farm relies on; they are
registered on a fresh plugin manager (monkeypatched in), so no other test sees them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import farm.plugins
from farm.errors import PluginError
from farm.hookspecs import hookimpl
from farm.mediatype import CollateContext, Job, MediaType, RenderContext
from farm.plugins import PluginInfo, Plugins
from farm.preview import PreviewContext
from farm.project import Project
from farm.pytest_plugin import write_project
from farm.settings import SettingsReader
from farm.testing import run_local

ROOT = Path(__file__).resolve().parents[1]


class Lines(MediaType):
    """A well-behaved media type: one file per job, the index of collated files in finalize."""

    name = "t_lines"

    def configure(self, settings: SettingsReader) -> dict[str, Any]:
        values = {"jobs": settings.integer("jobs", 6, min=0)}
        settings.finish()
        return values

    def count(self, project: Project) -> int | None:
        return project.settings["jobs"]

    def split(self, project: Project) -> Iterator[Job]:
        for i in range(project.settings["jobs"]):
            yield Job(f"j{i}", {"i": i, "pair": (i, i)}, inputs=())

    def render(self, job: Job, ctx: RenderContext) -> Mapping[str, Any] | None:
        Path("scratch.txt").write_text("in the work folder")  # relative: the current folder
        (ctx.output_dir / f"{job.key}.txt").write_text(str(job.params["i"]))
        return {"i": job.params["i"], "pair": job.params.get("pair"), "cwd": os.getcwd()}

    def collate(self, job: Job, result: Any, outputs: Mapping[str, Path], ctx: CollateContext) -> None:
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        (ctx.output_dir / f"{job.key}.txt").write_bytes(outputs[f"{job.key}.txt"].read_bytes())
        ctx.state["seen"] = ctx.state.get("seen", 0) + 1  # a counter: wrong after a restart
        ctx.state.setdefault("instances", set()).add(id(self))

    def finalize(self, ctx: CollateContext) -> list[Path]:
        index = ctx.output_dir / "index.txt"
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        index.write_text(f"{ctx.state.get('seen', 0)}\n")
        return [index, *sorted(ctx.output_dir.glob("j*.txt"))]


class SetParams(Lines):
    name = "t_set_params"

    def split(self, project: Project) -> Iterator[Job]:
        yield Job("a", {"tags": {"x", "y"}})


class ObjectResult(Lines):
    name = "t_object_result"

    def render(self, job: Job, ctx: RenderContext) -> Mapping[str, Any] | None:
        super().render(job, ctx)
        return {"path": ctx.output_dir}  # a Path: fine in one process, not on a farm


class IntKeys(Lines):
    name = "t_int_keys"

    def split(self, project: Project) -> Iterator[Job]:
        yield Job("a", {"by_zoom": {3: "x"}})  # msgpack packs it; the farm's receiver rejects it


class SetSettings(Lines):
    name = "t_set_settings"

    def configure(self, settings: SettingsReader) -> dict[str, Any]:
        return {"jobs": 1, "formats": {"png"}}


class CountTooHigh(Lines):
    name = "t_count_high"

    def count(self, project: Project) -> int | None:
        return project.settings["jobs"] + 1


class CountTooLow(Lines):
    name = "t_count_low"

    def count(self, project: Project) -> int | None:
        return project.settings["jobs"] - 1


class CountUnknown(Lines):
    name = "t_count_unknown"

    def count(self, project: Project) -> int | None:
        return None


class DuplicateKeys(Lines):
    name = "t_duplicate"

    def split(self, project: Project) -> Iterator[Job]:
        yield Job("a", {"i": 0})
        yield Job("a", {"i": 1})


class LateDep(Lines):
    name = "t_late_dep"

    def split(self, project: Project) -> Iterator[Job]:
        yield Job("a", {"i": 0}, deps=("b",))
        yield Job("b", {"i": 1})


class MessagePreview(Lines):
    name = "t_preview"

    def preview(self, ctx: PreviewContext) -> Mapping[str, Any] | None:
        assert isinstance(ctx, PreviewContext) and ctx.project and ctx.settings["jobs"] >= 0
        with ctx.open("index.txt") as index:  # read through ctx, beneath the output folder
            seen = index.read().decode().strip()
        return {"kind": "message", "text": f"{sum(1 for _ in ctx.files())} files, index says {seen}"}


class UnknownKindPreview(Lines):
    name = "t_preview_kind"

    def preview(self, ctx: PreviewContext) -> Mapping[str, Any] | None:
        return {"kind": "video", "files": ["j0.txt"]}


class MissingImagePreview(Lines):
    name = "t_preview_missing"

    def preview(self, ctx: PreviewContext) -> Mapping[str, Any] | None:
        return {"kind": "images", "files": ["thumbs/j0.png"], "count": 1}


TYPES = [Lines, SetParams, ObjectResult, IntKeys, SetSettings, CountTooHigh, CountTooLow, CountUnknown,
         DuplicateKeys, LateDep, MessagePreview, UnknownKindPreview, MissingImagePreview]


class _TestPlugin:
    @staticmethod
    @hookimpl
    def farm_register_media_types(register: Any) -> None:
        for cls in TYPES:
            register(cls)


@pytest.fixture(autouse=True)
def plugins(monkeypatch: pytest.MonkeyPatch) -> Plugins:
    fresh = Plugins()
    fresh.register(_TestPlugin(), PluginInfo(name="testing-helpers", version="0", module=__name__))
    monkeypatch.setattr(farm.plugins, "_plugins", fresh)
    return fresh


def project(tmp_path: Path, media_type: str, **settings: Any) -> Path:
    return write_project(tmp_path / media_type, media_type, settings)


@pytest.mark.parametrize(("media_type", "what"), [
    ("t_set_params", r"job 'a' \(its params or its deps' results\) cannot travel .*set"),
    ("t_object_result", r"the result of job 'j0' cannot travel .*PosixPath"),
    ("t_int_keys", r"job 'a' .* cannot travel .*int is not allowed for map key"),
    ("t_set_settings", r"the settings t_set_settings.configure returned cannot travel .*set"),
])
def test_a_value_that_cannot_travel_is_caught(tmp_path: Path, media_type: str, what: str):
    with pytest.raises(PluginError, match=what):
        run_local(project(tmp_path, media_type, jobs=1) if media_type != "t_set_settings"
                  else write_project(tmp_path / "p", media_type, {}))


@pytest.mark.parametrize(("media_type", "count"), [("t_count_high", 5), ("t_count_low", 3)])
def test_a_wrong_count_is_caught(tmp_path: Path, media_type: str, count: int):
    with pytest.raises(PluginError, match=rf"count\(\) returned {count}, but split yielded 4 jobs"):
        run_local(project(tmp_path, media_type, jobs=4))


def test_an_unknown_count_and_a_right_one_pass(tmp_path: Path):
    assert len(run_local(project(tmp_path, "t_count_unknown", jobs=3)).jobs) == 3
    assert len(run_local(project(tmp_path, "t_lines", jobs=0)).jobs) == 0


def test_duplicate_keys_and_deps_on_later_jobs_are_caught(tmp_path: Path):
    with pytest.raises(PluginError, match="yielded the key 'a' twice"):
        run_local(project(tmp_path, "t_duplicate"))
    with pytest.raises(PluginError, match=r"job 'a' depends on \['b'\], which split did not yield earlier"):
        run_local(project(tmp_path, "t_late_dep"))


def test_values_arrive_as_they_would_over_the_wire(tmp_path: Path):
    folder = project(tmp_path, "t_lines", jobs=3)
    run = run_local(folder)
    assert run.results["j1"]["pair"] == [1, 1]  # a tuple arrives as a list, as msgpack gives it
    assert [p.name for p in run.outputs] == ["index.txt", "j0.txt", "j1.txt", "j2.txt"]
    cwd = Path(run.results["j0"]["cwd"])
    assert cwd.name == "0" and cwd.parent.name == "work"  # render ran in its own work_dir
    assert not (folder / "scratch.txt").exists() and not Path("scratch.txt").exists()


def test_collates_in_a_shuffled_order_with_a_restart_between(tmp_path: Path):
    run = run_local(project(tmp_path, "t_lines", jobs=8), seed=1)
    split_order = [job.key for job in run.jobs]
    assert sorted(run.collated) == sorted(split_order) and run.collated != split_order
    assert run_local(project(tmp_path, "t_lines", jobs=8), seed=1).collated == run.collated  # seeded
    assert run_local(project(tmp_path, "t_lines", jobs=8), seed=2).collated != run.collated
    assert run.restarted_after == 4
    # the counter in ctx.state lost the 4 jobs collated before the restart, as on a farm
    assert (run.project.output_dir / "index.txt").read_text() == "4\n"
    plain = run_local(project(tmp_path, "t_lines", jobs=8), shuffle=False, restart=False)
    assert plain.collated == split_order and plain.restarted_after is None
    assert (plain.project.output_dir / "index.txt").read_text() == "8\n"


def test_pyproject_registers_the_pytest_plugin():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["pytest11"] == {"farm": "farm.pytest_plugin"}


def test_fixtures_give_a_project_and_an_embedded_farm(tmp_path: Path):
    """A plugin author's test file, run by pytest with only farm's plugin loaded."""
    (tmp_path / "sample").mkdir()
    write_project(tmp_path / "sample", "synthetic", {"jobs": 3})
    (tmp_path / "test_author.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        from farm.project import load_project

        def test_copy_and_render(farm_project, farm_embedded, tmp_path):
            copy = farm_project({str(tmp_path / "sample")!r})
            assert copy.parent == tmp_path and copy.name == "project"
            made = farm_project(media_type="synthetic", settings={{"jobs": 2, "cache": False}})
            assert made.name == "project-2"
            farm = farm_embedded(agents=2)
            for folder, jobs in ((copy, 3), (made, 2)):
                summary = farm.submit(load_project(folder))
                assert summary.ok, summary.failures
                assert summary.done == summary.total == jobs
            assert len(farm.procs) == 2
    """))
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the plugin alone, installed or not
    command = [sys.executable, "-m", "pytest", "-q", "-p", "farm.pytest_plugin", "-p", "no:cacheprovider",
               "test_author.py"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_preview_runs_once_at_the_end_and_is_checked_as_the_server_checks_it(tmp_path: Path):
    assert run_local(project(tmp_path, "t_lines", jobs=2)).preview is None  # no preview: None
    shown = run_local(project(tmp_path, "t_preview", jobs=3)).preview
    assert shown is not None and shown["kind"] == "message" and shown["text"].startswith("4 files, index says ")
    with pytest.raises(PluginError, match=r"t_preview_kind.preview returned a description .*'kind' is 'video'"):
        run_local(project(tmp_path, "t_preview_kind", jobs=1))
    with pytest.raises(PluginError, match=r"names files not in the output folder: \['thumbs/j0.png'\]"):
        run_local(project(tmp_path, "t_preview_missing", jobs=1))
