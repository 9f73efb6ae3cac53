"""The maptiles case folders (tests/cases/maptiles-*), end to end through ``farm submit`` with real Mapnik.

- maptiles-missing-font: a face-name nobody installed is refused at load, naming face, style and symbolizer.
- maptiles-style-in-subfolder: paths in ``style/map.xml`` are relative to ``style/``, on the agents too.
- maptiles-label-seam: labels wider than the default buffer come out as in one seamless render.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import mapnik
import pytest
from maptiles_helpers import copy_case, mosaic, seamless, write_project

from farm.embedded import submit_embedded
from farm.errors import ProjectError
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


def farm_submit(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, "submit", *args, str(project)], capture_output=True, text=True, timeout=300)


def is_red(image: mapnik.Image, x: int, y: int) -> bool:
    c = image.get_pixel_color(x, y)
    return c.r > 200 and c.g < 60 and c.b < 60


# -- maptiles-missing-font -------------------------------------------------------------------


def test_missing_font_case_is_refused_at_load(tmp_path: Path) -> None:
    project = copy_case("maptiles-missing-font", tmp_path / "p")
    with pytest.raises(ProjectError) as caught:
        load_project(project)
    message = str(caught.value)
    assert message.startswith(f"{project / 'farm.toml'}:6: [maptiles] style: ")
    assert "style.xml:5: face-name 'Arial Unicode MS Regular'" in message
    assert "in style 'labels', TextSymbolizer" in message and "font-directory" in message


def test_missing_font_case_fails_farm_submit_without_a_traceback(tmp_path: Path) -> None:
    project = copy_case("maptiles-missing-font", tmp_path / "p")
    done = farm_submit(project, "--agents", "1")
    assert done.returncode == 1
    assert "Arial Unicode MS Regular" in done.stderr and "Traceback" not in done.stderr
    assert not (project / "output").exists()


# -- maptiles-style-in-subfolder -------------------------------------------------------------


def test_style_in_subfolder_case_renders_through_farm_submit(tmp_path: Path) -> None:
    project = copy_case("maptiles-style-in-subfolder", tmp_path / "p")
    done = farm_submit(project, "--agents", "1")
    assert done.returncode == 0, done.stderr
    assert len(list((project / "output/tiles").rglob("*.png"))) == 1 + 4
    # the pin at (0, 0) is a 40 px red square at the middle of the world tile; (45E, 30N) is another
    world = mapnik.Image.open(str(project / "output/tiles/0/0/0.png"))
    assert is_red(world, 128, 128) and is_red(world, 160, 109) and not is_red(world, 60, 200)
    assert is_red(mapnik.Image.open(str(project / "output/tiles/1/1/0.png")), 0, 255)


def test_a_style_two_folders_deep_reads_files_beside_it_and_above_it(tmp_path: Path) -> None:
    """``..`` that stays inside the project is allowed; data beside the style and icons two levels up."""
    case = Path(__file__).parent / "cases" / "maptiles-style-in-subfolder" / "style"
    style = (case / "map.xml").read_text().replace('file="icons/pin.svg"', 'file="../../shared/pin.svg"')
    project = write_project(tmp_path / "p", style, {
        "maps/world/points.csv": (case / "points.csv").read_text(),
        "shared/pin.svg": (case / "icons/pin.svg").read_text(),
    }, table='style = "maps/world/map.xml"\nzoom = 0')
    summary = submit_embedded(project, agents=1)
    assert summary.ok, summary.failures
    assert is_red(mapnik.Image.open(str(project / "output/tiles/0/0/0.png")), 128, 128)


# -- maptiles-label-seam ---------------------------------------------------------------------


def test_label_seam_case_matches_one_seamless_render(tmp_path: Path) -> None:
    project = copy_case("maptiles-label-seam", tmp_path / "p")
    assert load_project(project).settings["buffer"] > 128  # derived from the 40-character labels
    summary = submit_embedded(project, agents=1)
    assert summary.ok, summary.failures
    reference = seamless(project / "style.xml", 4)
    assert mosaic(project / "output", 4).compare(reference, 60) == 0


def test_a_set_buffer_too_narrow_for_the_labels_cuts_them_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The comparison above can fail: the old fixed 128 px buffer cuts the labels at x = 8 tiles."""
    project = copy_case("maptiles-label-seam", tmp_path / "p")
    with (project / "farm.toml").open("a") as toml:
        toml.write("buffer = 128\n")
    with caplog.at_level(logging.WARNING, logger="farm_maptiles"):
        assert load_project(project).settings["buffer"] == 128
    assert "may be cut where metatiles meet" in caplog.text and "[maptiles] buffer = " in caplog.text
    summary = submit_embedded(project, agents=1)
    assert summary.ok, summary.failures
    assert mosaic(project / "output", 4).compare(seamless(project / "style.xml", 4), 60) > 100
