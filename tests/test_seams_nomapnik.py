"""A controller host without Mapnik schedules a map project; agents that have Mapnik render it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, restartable_url, wait_for

from farm import Job, MediaType, hookimpl
from farm.client import Client, submit
from farm.plugins import PluginInfo, get_plugins
from farm.project import load_project

SAMPLE = ROOT / "sample_projects" / "world_map"



def without_mapnik(folder: Path) -> dict[str, str]:
    """An environment whose Python cannot import mapnik (a shim first on PYTHONPATH refuses it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapnik.py").write_text('raise ImportError("No module named \'mapnik\' (this host has no Mapnik)")\n')
    path = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def test_a_controller_without_mapnik_schedules_the_world_map(tmp_path, agents):
    env = without_mapnik(tmp_path / "shim")
    probe = subprocess.run([sys.executable, "-c", "import mapnik"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "no Mapnik" in probe.stderr  # the controller's host really lacks it
    url = restartable_url()
    ctl = subprocess.Popen([sys.executable, "-m", "farm", "--log-level", "warning", "controller", "--bind", url,
                            "--insecure", "--state-dir", str(tmp_path / "state"), "--heartbeat", "0.5"], env=env)
    try:
        with Client(url, timeout=5) as client:
            wait_for(lambda: _up(client), 60, "the controller")
        project = tmp_path / "world_map"
        shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("output", ".farm"))  # a clean copy
        toml = project / "farm.toml"
        toml.write_text(toml.read_text().replace('zoom = "0-5"', 'zoom = "0-2"'))
        agents(url, 2)
        summary = submit(url, load_project(project), upload=True)
        assert summary.ok, summary
        assert summary.done == summary.total == 3  # one metatile job per zoom, 0-2
        tiles = sorted(p.relative_to(project / "output").as_posix()
                       for p in (project / "output").rglob("*.png"))
        assert len(tiles) == 1 + 4 + 16 and "tiles/2/3/3.png" in tiles
        assert all((project / "output" / t).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for t in tiles)
    finally:
        ctl.terminate()
        assert ctl.wait(30) == 0


def _up(client: Client) -> bool:
    try:
        client.status()
    except Exception:
        return False
    return True


class Probing(MediaType):
    """A media type that records, at each configure, whether renderer checks were asked for."""

    name = "probing"
    seen: list[bool] = []  # noqa: RUF012 (the test reads it)

    def configure(self, settings):
        Probing.seen.append(settings.renderer_checks)
        return {}

    def split(self, project):
        yield Job("only", {})

    def render(self, job, ctx):
        return None

    def collate(self, job, result, outputs, ctx):
        pass


class ProbingPlugin:
    @hookimpl
    def farm_register_media_types(self, register):
        register(Probing)


def test_renderer_checks_run_where_the_project_is_submitted_not_on_the_controller(tmp_path, controller):
    plugins = get_plugins()
    plugin = ProbingPlugin()
    info = PluginInfo("probing", "0", __name__)
    plugins.infos.append(info)  # as `Plugins.load` does for an entry point
    plugins.register(plugin, info)
    try:
        folder = tmp_path / "probe"
        folder.mkdir()
        (folder / "farm.toml").write_text('[project]\nname = "probe"\nmedia_type = "probing"\n')
        Probing.seen.clear()
        project = load_project(folder)
        assert Probing.seen == [True]  # the submitter: the full checks
        with Client(controller.url) as client:
            client.submit(project)
        assert Probing.seen == [True, False]  # the controller: read again, its renderer not needed
    finally:
        plugins.manager.unregister(plugin)
        del plugins.media_types["probing"]
        plugins.infos = [i for i in plugins.infos if i.name != "probing"]
