"""`farm plugin new`: the package it writes installs, passes its own tests and renders on a farm;
the template ships inside farm's wheel; bad names are refused with a message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "farm" / "scaffold" / "template"


def farm_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "farm", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_new_plugin_installs_passes_its_tests_and_renders(tmp_path: Path):
    made = farm_cli("plugin", "new", "thumbs", "--dir", str(tmp_path), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    package = tmp_path / "farm-thumbs"
    assert str(package) in made.stdout
    # installed into a folder of its own, so this machine's environment is not touched
    site = tmp_path / "site"
    pip("install", "--no-deps", "--target", str(site), str(package), cwd=tmp_path)
    assert (site / "farm_thumbs" / "__init__.py").is_file()
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}

    listed = farm_cli("plugins", "--json", cwd=tmp_path, env=env)
    thumbs = [p for p in json.loads(listed.stdout)["plugins"] if p["name"] == "thumbs"]
    assert thumbs and thumbs[0]["version"] == "0.1.0" and thumbs[0]["media_types"][0]["name"] == "thumbs"

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package,
                           env=env, capture_output=True, text=True, timeout=240)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    rendered = farm_cli("submit", "project", "--agents", "2", "--json", cwd=package, env=env)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    summary = json.loads(rendered.stdout.strip().splitlines()[-1])
    assert summary["state"] == "done" and summary["jobs"]["done"] == summary["jobs"]["total"] == 3
    output = package / "project" / "output"
    assert (output / "index.txt").read_text().splitlines() == [f"items/item-{i:06d}.txt" for i in range(6)]
    assert (output / "items" / "item-000005.txt").read_text() == "hello 5\n"


def test_names_shape_the_package(tmp_path: Path):
    from farm.scaffold import new_plugin

    package = new_plugin("web_thumb", tmp_path)
    assert package == tmp_path / "farm-web-thumb"
    meta = tomllib.loads((package / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "farm-web-thumb"
    assert meta["project"]["entry-points"]["farm.plugins"] == {"web_thumb": "farm_web_thumb"}
    source = (package / "farm_web_thumb" / "__init__.py").read_text()
    compile(source, "farm_web_thumb/__init__.py", "exec")
    assert "class WebThumb(MediaType):" in source and 'name = "web_thumb"' in source
    compile((package / "tests" / "test_web_thumb.py").read_text(), "test_web_thumb.py", "exec")
    sample = tomllib.loads((package / "project" / "farm.toml").read_text())
    assert sample["project"]["media_type"] == "web_thumb" and "web_thumb" in sample
    # every file in the template was written, none left with a placeholder
    written = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
    assert len(written) == len(list(TEMPLATE.rglob("*.tmpl")))
    assert not [p for p in written if "${" in (package / p).read_text()]


def refused_as_usage(name: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """`farm plugin new NAME`'s message (flattened) for a bad or taken NAME:
    a usage error (exit 2, as a bad option), nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    done = farm_cli("plugin", "new", name, "--dir", str(out), cwd=tmp_path,
                    env={**(env or os.environ), "COLUMNS": "200"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and list(out.iterdir()) == []
    return " ".join(done.stderr.replace("│", " ").split())


@pytest.mark.parametrize("name", ["Thumbs", "1thumbs", "web-thumb", "", "x" * 41, "../evil", "a b", "thümbs"])
def test_a_bad_name_is_refused_with_a_message(tmp_path: Path, name: str):
    message = refused_as_usage(name, tmp_path)  # a usage error, as a taken name is (exit 2)
    assert f"Invalid value for NAME: plugin name {name!r}: use a lower-case letter" in message


# a third-party plugin whose entry point is named otherwise than the media type it registers
OTHER_NAMED = """
    from farm.hookspecs import hookimpl
    from farm.mediatype import MediaType


    class Oddity(MediaType):
        name = "oddity"


    @hookimpl
    def farm_register_media_types(register):
        register(Oddity)
"""


@pytest.mark.parametrize("name", ["maptiles", "frames"])
def test_a_builtin_media_types_name_is_refused(tmp_path: Path, name: str):
    message = refused_as_usage(name, tmp_path)
    assert f"plugin name {name!r}: media type {name!r} is installed already: farm " in message
    assert f"({name} = farm_{name}); choose another name" in message


@pytest.mark.parametrize("name, clash", [
    ("thing", "media type 'thing' is installed already: farm_thing 0.1 (thing = farm_thing)"),
    ("oddity", "media type 'oddity' is installed already: farm_odd 0.1 (odd = farm_odd)"),
    ("lonely", "the module farm_lonely is importable already ("),
    ("ghost", "the distribution farm-ghost 0.2 is installed already"),
])
def test_a_name_taken_by_an_installed_plugin_module_or_distribution_is_refused(tmp_path: Path, name: str,
                                                                               clash: str):
    from sched_helpers import install_plugin

    site = install_plugin(tmp_path / "site", "farm_thing", OTHER_NAMED.replace("Oddity", "Thing").replace(
        '"oddity"', '"thing"'), "thing")
    install_plugin(site, "farm_odd", OTHER_NAMED, "odd")
    (site / "farm_lonely.py").write_text("")  # a module without a distribution
    ghost = site / "farm_ghost-0.2.dist-info"  # a distribution without the module (yet)
    ghost.mkdir()
    (ghost / "METADATA").write_text("Metadata-Version: 2.1\nName: farm-ghost\nVersion: 0.2\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    assert f"plugin name {name!r}: {clash}" in refused_as_usage(name, tmp_path, env)


def test_an_existing_folder_is_not_overwritten(tmp_path: Path):
    (tmp_path / "farm-thumbs").mkdir()
    (tmp_path / "farm-thumbs" / "mine.txt").write_text("keep")
    done = farm_cli("plugin", "new", "thumbs", "--dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1 and "exists already" in done.stderr and "Traceback" not in done.stderr
    assert [p.name for p in (tmp_path / "farm-thumbs").iterdir()] == ["mine.txt"]


@pytest.mark.slow
def test_the_template_ships_in_farms_wheel(tmp_path: Path):
    """A non-editable install gets the template: it is package data of farm.scaffold."""
    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", ".farm", "output")
    for name in ("farm", "plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip("wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("farm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    expected = {f"farm/{p.relative_to(TEMPLATE.parents[1]).as_posix()}" for p in TEMPLATE.rglob("*.tmpl")}
    assert expected and expected <= names, sorted(expected - names)
    assert "[pytest11]\nfarm = farm.pytest_plugin" in entry_points
