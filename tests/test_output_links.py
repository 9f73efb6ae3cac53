"""Symlinks in a project's output folder or in the embedded farm's `.farm/` refuse the run.

A downloaded project can hold links (``output/collated.log`` to a file of the user's,
``output/tiles`` to another folder, a dangling one SQLite would create): farm must not
write through any of them, on the embedded farm, a path submit (``--shared-fs``) or an
upload. Each refusal names the link relative to the project, says to remove it, and comes
before any job runs (the synthetic ``render_log`` would show one). Farm's own leftovers
never refuse the next run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from farm.client import submit
from farm.embedded import submit_embedded
from farm.errors import FarmError
from farm.linkcheck import LinkRefused, find_links
from farm.project import STATE_DIR, load_project

RENDERED = "rendered.log"  # a line per job rendered (synthetic's render_log)
SETTINGS = {"jobs": 3, "log_collations": True, "output_bytes": 64, "render_log": RENDERED}


def plant(kind: str, project: Path, outside: Path) -> tuple[str, Path]:
    """A link of ``kind`` in the project's output folder; returns its relative path and its target."""
    output = project / "output"
    output.mkdir(exist_ok=True)
    if kind == "file":  # the user's report: the collated log appended to a file of theirs
        target = outside / "victim.txt"
        target.write_text("precious\n")
        rel = "output/collated.log"
    elif kind == "folder":  # a job's output moved into the linked folder (shutil.move)
        target = outside / "folder"
        target.mkdir()
        rel = "output/job-0000001.bin"
    elif kind == "dangling":  # created through the link
        target = outside / "created.log"
        rel = "output/collated.log"
    else:  # deep in the tree: the whole tree is walked
        target = outside / "deep"
        target.mkdir()
        (output / "a" / "b").mkdir(parents=True)
        rel = "output/a/b/tiles"
    os.symlink(target, project / rel)
    return rel, target


def outside_state(target: Path) -> object:
    if target.is_dir():
        return sorted(p.name for p in target.iterdir())
    return target.read_text() if target.exists() else None


KINDS = ["file", "folder", "dangling", "deep"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_link_in_the_output_folder_refuses_an_embedded_run(synthetic, tmp_path, kind):
    project = synthetic(**SETTINGS)
    outside = tmp_path / "outside"
    outside.mkdir()
    rel, target = plant(kind, project, outside)
    before = outside_state(target)
    with pytest.raises(FarmError) as refused:
        submit_embedded(project, agents=1)
    message = str(refused.value)
    assert rel in message and "symlink" in message and "remove it" in message, message
    assert outside_state(target) == before, "written through the link"
    assert not (project / RENDERED).exists(), "a job ran"


@pytest.mark.parametrize("link", [f"{STATE_DIR}/journal.sqlite", STATE_DIR])
def test_a_link_in_the_state_folder_refuses_an_embedded_run(synthetic, tmp_path, link):
    project = synthetic(**SETTINGS)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "journal.sqlite" if link != STATE_DIR else outside
    (project / STATE_DIR).mkdir(exist_ok=link != STATE_DIR)
    if link == STATE_DIR:
        (project / STATE_DIR).rmdir()
    os.symlink(target, project / link)
    with pytest.raises(LinkRefused, match=f"{link} in .* is a symlink.*remove it"):
        submit_embedded(project, agents=1)
    assert not (outside / "journal.sqlite").exists() and list(outside.iterdir()) == []
    assert not (project / RENDERED).exists()


def test_farms_own_leftovers_never_refuse_the_next_run(synthetic):
    project = synthetic(jobs=3, log_collations=True, output_bytes=64, report=True)
    for round_ in range(2):
        summary = submit_embedded(project, agents=1)
        assert summary.ok, (round_, summary)
    assert find_links(project, "output") == [] and find_links(project, STATE_DIR) == []
    assert (project / "output" / "job-0000001.bin").is_file()


def test_the_users_report_exits_1_naming_the_link(synthetic, tmp_path):
    project = synthetic(jobs=3, log_collations=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (project / "output").mkdir()
    os.symlink(victim, project / "output" / "collated.log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "farm", "submit", str(project), "--agents", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done
    assert "output/collated.log" in done.stderr and "remove it" in done.stderr, done.stderr
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("upload", [False, True], ids=["shared-fs", "upload"])
def test_a_link_in_the_output_folder_refuses_a_remote_submit(controller, agents, synthetic, tmp_path, upload):
    agents(controller.url, 1)  # were a project accepted, its run would end (and the test fail), not hang
    outside = tmp_path / "outside"
    outside.mkdir()
    for kind in KINDS:
        project = synthetic(**SETTINGS)
        rel, target = plant(kind, project, outside)
        with pytest.raises(FarmError, match=f"{rel} in .* is a symlink.*remove it"):
            submit(controller.url, load_project(project), upload=upload)
        assert not (project / RENDERED).exists()
    assert outside_state(outside / "victim.txt") == "precious\n"
    assert not (outside / "created.log").exists()
    assert list((outside / "folder").iterdir()) == [] and list((outside / "deep").iterdir()) == []
    assert not controller.runs, "a refused project was accepted"


@pytest.mark.parametrize("upload", [False, True], ids=["shared-fs", "upload"])
def test_a_remote_project_runs_again_after_a_good_run(controller, agents, synthetic, upload):
    agents(controller.url, 1)
    project = synthetic(jobs=3, log_collations=True, output_bytes=64)
    for round_ in range(2):
        summary = submit(controller.url, load_project(project), upload=upload)
        assert summary.ok, (round_, summary)
    assert (project / "output" / "job-0000001.bin").is_file()
    assert find_links(project, "output") == []


def test_maptiles_writes_do_not_follow_a_link_left_in_place(tmp_path):
    """Defence in depth, past the check: a tile or the MBTiles file that is a link is not written through."""
    pytest.importorskip("mapnik")
    from farm_maptiles.mbtiles import MBTilesWriter
    from farm_maptiles.mediatype import _write_tile

    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    os.symlink(victim, tmp_path / "tile.png")
    with pytest.raises(OSError):
        _write_tile(tmp_path / "tile.png", b"tile")
    assert victim.read_bytes() == b"precious"
    _write_tile(tmp_path / "new.png", b"tile")
    assert (tmp_path / "new.png").read_bytes() == b"tile"
    os.symlink(tmp_path / "created.mbtiles", tmp_path / "world.mbtiles")
    with pytest.raises(OSError):
        MBTilesWriter(tmp_path / "world.mbtiles")
    assert not (tmp_path / "created.mbtiles").exists()
