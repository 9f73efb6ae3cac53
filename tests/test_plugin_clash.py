"""Two providers of one media type name: never silent, and a built-in is never replaced.

Real installs (a module and its dist-info with the entry point, as pip leaves them) in a
folder on PYTHONPATH, read by real `farm` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sched_helpers import install_plugin

# what `farm plugin new maptiles` made and `pip install -e` put first on the path: a module
# farm_maptiles that shadows the built-in one, and a second entry point named maptiles
IMPOSTER = """
    from farm.errors import ProjectError
    from farm.hookspecs import hookimpl
    from farm.mediatype import MediaType


    class Maptiles(MediaType):
        name = "maptiles"

        def configure(self, settings):
            raise ProjectError("the imposter's configure ran")


    @hookimpl
    def farm_register_media_types(register):
        register(Maptiles)
"""

# a plugin named otherwise that registers a media type of its own, then the built-in's name
GRABBER = """
    from farm.hookspecs import hookimpl
    from farm.mediatype import MediaType


    class Mine(MediaType):
        name = "aa_mine"


    class Maptiles(MediaType):
        name = "maptiles"


    @hookimpl
    def farm_register_media_types(register):
        register(Mine)
        register(Maptiles)
"""


def farm(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "farm", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_second_distribution_of_a_builtins_name_loads_neither_and_says_why(tmp_path: Path):
    site = install_plugin(tmp_path / "site", "farm_maptiles", IMPOSTER, "maptiles")
    listed = farm("plugins", "--json", site=site, cwd=tmp_path)
    assert listed.returncode == 1, listed.stderr  # everything listed, the refusal in it: not a success
    listing = json.loads(listed.stdout)
    assert listing["code"] == "error" and "maptiles" in listing["error"], listing
    rows = [r for r in listing["plugins"] if r["name"] == "maptiles"]
    assert sorted(r["dist"] for r in rows) == ["farm", "farm_maptiles"]
    for row in rows:
        assert row["media_types"] == []
        assert "media type 'maptiles' is provided by 2 distributions" in row["error"]
        assert "farm_maptiles 0.1 (maptiles = farm_maptiles)" in row["error"]
        assert "(maptiles = farm_maptiles)" in row["error"].replace("farm_maptiles 0.1 (", "")

    project = tmp_path / "map"
    project.mkdir()
    (project / "farm.toml").write_text('[project]\nname = "map"\nmedia_type = "maptiles"\n\n'
                                       '[maptiles]\nattribution = "me"\n')
    submitted = farm("submit", str(project), "--json", site=site, cwd=tmp_path)
    assert submitted.returncode == 1, submitted.stdout + submitted.stderr
    error = json.loads(submitted.stdout)
    assert error["code"] == "invalid"
    where = f"{project / 'farm.toml'}:3: [project] media_type: "
    assert error["error"].startswith(where + "media type 'maptiles' is provided by 2 distributions")
    assert "farm_maptiles 0.1 (maptiles = farm_maptiles)" in error["error"]
    assert "imposter" not in error["error"]


def test_a_plugin_registering_a_builtins_name_is_refused_whole_and_the_builtin_kept(tmp_path: Path):
    site = install_plugin(tmp_path / "site", "farm_aa_grab", GRABBER, "aa_grab")  # sorts before maptiles
    listed = farm("plugins", "--json", site=site, cwd=tmp_path)
    assert listed.returncode == 1, listed.stderr  # everything listed, the refusal in it: not a success
    rows = {r["name"]: r for r in json.loads(listed.stdout)["plugins"]}
    builtin, grabber = rows["maptiles"], rows["aa_grab"]
    assert builtin["error"] is None and [m["name"] for m in builtin["media_types"]] == ["maptiles"]
    assert builtin["dist"] == "farm"
    # refused whole: its own media type is not left half registered
    assert grabber["media_types"] == []
    assert grabber["error"].startswith("PluginError: media type 'maptiles' belongs to farm ")
    assert "(maptiles = farm_maptiles)" in grabber["error"]
    assert "farm_aa_grab 0.1 (aa_grab = farm_aa_grab)" in grabber["error"]
    text = farm("plugins", site=site, cwd=tmp_path)
    refused = "aa_grab 0.1 (farm_aa_grab)\n  failed to load: PluginError: media type 'maptiles' belongs to "
    assert refused in text.stdout and "maptiles 0.1.0 (farm_maptiles)\n  maptiles: " in text.stdout
    assert text.returncode == 1
    assert text.stderr.endswith("\nerror: not loaded (see above): aa_grab (farm_aa_grab)\n"), text.stderr


def test_plugins_exits_0_when_every_plugin_loaded(tmp_path: Path):
    for args in (("plugins",), ("plugins", "--json")):
        listed = farm(*args, site=tmp_path, cwd=tmp_path)
        assert listed.returncode == 0 and listed.stderr == "", listed.stdout + listed.stderr
    assert "maptiles" in {r["name"] for r in json.loads(listed.stdout)["plugins"] if r["error"] is None}
