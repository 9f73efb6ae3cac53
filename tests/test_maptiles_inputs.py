"""Each maptiles job names the files its style reads, so an edit of any other file renders nothing.

Real controller, real agents, real Mapnik: a file no job reads is edited (all tiles reused), a
file the style reads is edited (every job renders again, and the tiles show the edit, so the
agents had the new file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mapnik
import pytest
from conftest import ROOT, wait_for
from farm_maptiles import mapstyle, references
from maptiles_helpers import copy_case, style_xml, write_project, write_renamed_font

from farm.client import submit
from farm.plugins import get_media_type
from farm.project import load_project


def is_red(image: mapnik.Image, x: int, y: int) -> bool:
    c = image.get_pixel_color(x, y)
    return c.r > 200 and c.g < 60 and c.b < 60


def is_blue(image: mapnik.Image, x: int, y: int) -> bool:
    c = image.get_pixel_color(x, y)
    return c.b > 200 and c.r < 60 and c.g < 60


def test_the_world_map_reuses_every_tile_after_an_edit_of_a_file_no_job_reads(controller, agents, tmp_path):
    project = tmp_path / "wm"
    shutil.copytree(ROOT / "sample_projects" / "world_map", project,
                    ignore=shutil.ignore_patterns("output", ".farm"))
    toml = project / "farm.toml"
    toml.write_text(toml.read_text().replace('zoom = "0-5"', 'zoom = "0-3"'))
    agents(controller.url, 2)
    first = submit(controller.url, load_project(project))
    assert first.ok and first.reused == 0 and first.done > 1
    (project / "notes.txt").write_text("more\n")
    unread = submit(controller.url, load_project(project))
    assert unread.ok and (unread.done, unread.reused) == (first.done, first.done)
    with (project / "world.xml").open("a") as style:
        style.write("<!-- edited -->\n")
    edited = submit(controller.url, load_project(project))
    assert edited.ok and edited.reused == 0, "an edit of the style must render every job again"


def test_a_style_in_a_subfolder_renders_again_with_each_file_it_reads(controller, agents, tmp_path):
    project = copy_case("maptiles-style-in-subfolder", tmp_path / "p")
    agents(controller.url, 1)
    first = submit(controller.url, load_project(project))
    assert first.ok and first.reused == 0
    total = first.done
    tile = project / "output/tiles/0/0/0.png"
    assert is_red(mapnik.Image.open(str(tile)), 128, 128)

    (project / "notes.txt").write_text("not read by the style\n")
    (project / "style" / "unused.csv").write_text("wkt,name\n\"POINT(0 0)\",x\n")
    unread = submit(controller.url, load_project(project))
    assert unread.ok and (unread.done, unread.reused) == (total, total)

    icon = project / "style/icons/pin.svg"  # beside the style, named by a symbolizer
    icon.write_text(icon.read_text().replace("#ff0000", "#0000ff"))
    recolored = submit(controller.url, load_project(project))
    assert recolored.ok and (recolored.done, recolored.reused) == (total, 0)
    assert is_blue(mapnik.Image.open(str(tile)), 128, 128), "the agent rendered with an old icon"

    points = project / "style/points.csv"  # the layer's datasource, beside the style
    points.write_text(points.read_text() + '"POINT(-90 -45)",west\n')
    moved = submit(controller.url, load_project(project))
    assert moved.ok and (moved.done, moved.reused) == (total, 0)
    world = mapnik.Image.open(str(tile))
    assert is_blue(world, 64, 128 + 38) and not is_blue(world, 64, 60), "the agent rendered an old points.csv"


def test_a_file_no_job_reads_starts_no_watch_round(tmp_path: Path) -> None:
    """An edit of notes.txt would start a round that reuses every tile: none starts, and it is said
    why; an edit of the style's data then renders every job again."""
    project = copy_case("maptiles-style-in-subfolder", tmp_path / "p")
    err = tmp_path / "err"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "farm", "--log-level", "info", "submit", "--watch",
                                 "--json", "--agents", "1", str(project)], stdout=subprocess.PIPE,
                                stderr=stderr, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["jobs"]["done"] == first["jobs"]["total"] > 0 and first["jobs"]["reused"] == 0
        total = first["jobs"]["total"]
        (project / "notes.txt").write_text("more\n")
        said = "notes.txt (new) changed; no job reads it: nothing to render"
        wait_for(lambda: said in err.read_text(), 180, "the unread edit said")
        (project / "style/points.csv").write_text('wkt,name\n"POINT(0 0)",origin\n')
        second = json.loads(proc.stdout.readline())  # the next round: the data's edit, not notes.txt's
        assert second["jobs"] == {"total": total, "done": total, "failed": 0, "reused": 0, "resumed": 0}
    finally:
        proc.terminate()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _inputs(project: Path) -> list[str] | None:
    return load_project(project).settings["inputs"]


def test_inputs_name_the_style_its_data_images_and_fonts_and_nothing_else(tmp_path: Path) -> None:
    font = write_renamed_font(tmp_path / "p" / "fonts" / "farmtt.ttf")
    text = '<TextSymbolizer face-name="FarmTT Sans Mono Oblique" size="10">[name]</TextSymbolizer>'
    rule = f'{text}<MarkersSymbolizer file="../icons/pin.svg"/>'
    project = write_project(tmp_path / "p", style_xml(rule, map_attrs=' font-directory="../fonts"'), {
        "style/places.csv": 'wkt,name\n"POINT(0 0)",a\n', "icons/pin.svg": "<svg/>",
        "notes.txt": "unread", "fonts/README": "not a font"}, table='style = "style/map.xml"\nzoom = "0"')
    assert font.is_file()
    assert _inputs(project) == ["fonts/farmtt.ttf", "icons/pin.svg", "style/map.xml", "style/places.csv"]
    # the controller, without Mapnik's checks, finds the same files itself
    controller_side = load_project(project, renderer_checks=False, facts={})
    assert controller_side.settings["inputs"] == _inputs(project)
    jobs = list(get_media_type("maptiles").split(controller_side))
    assert jobs and all(job.inputs == tuple(_inputs(project)) for job in jobs)


def test_a_shapefile_named_without_its_suffix_brings_each_of_its_parts(tmp_path: Path) -> None:
    parts = {f"data/roads{ext}": "" for ext in (".shp", ".shx", ".dbf", ".prj")}
    ds = '<Datasource><Parameter name="type">shape</Parameter><Parameter name="file">data/roads</Parameter>' \
         "</Datasource>"
    project = write_project(tmp_path / "p", style_xml('<LineSymbolizer/>', ds), parts)
    style = mapstyle.read_style(project / "style.xml", project, faces=False)
    assert style.inputs() == ["data/roads.dbf", "data/roads.prj", "data/roads.shp", "data/roads.shx",
                              "style.xml"]


def test_a_datasource_type_that_can_read_unnamed_files_counts_every_asset_as_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(references.ALLOW_ENV, "sqlite")
    ds = '<Datasource><Parameter name="type">sqlite</Parameter><Parameter name="file">db.sqlite</Parameter>' \
         "</Datasource>"
    project = write_project(tmp_path / "p", style_xml("<PointSymbolizer/>", ds), {"db.sqlite": ""})
    assert mapstyle.read_style(project / "style.xml", project, faces=False).inputs() is None
