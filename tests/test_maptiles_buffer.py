"""The metatile buffer follows the style's labels: ``[maptiles] buffer``, else the Map's
``buffer-size``, else derived from the widest label in the data (at least 128 px)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from maptiles_helpers import mosaic, seamless, style_xml, write_project

from farm.plugins import get_media_type
from farm.project import load_project
from farm.testing import run_local


def label_style(size: int = 14, attrs: str = "", map_attrs: str = "") -> str:
    text = f'<TextSymbolizer face-name="DejaVu Sans Book" size="{size}"{attrs}>[name]</TextSymbolizer>'
    return style_xml(text, map_attrs=map_attrs)


def places(names: list[str], lons: list[float]) -> str:
    pairs = enumerate(zip(names, lons, strict=True))
    rows = [f'"POINT({lon} {-60 + 7 * i})",{name}' for i, (name, lon) in pairs]
    return "wkt,name\n" + "\n".join(rows) + "\n"


LONG = ["A rather long place name for a label"] * 2
SHORT = ["Oslo", "Bern"]


def buffer_of(tmp_path: Path, style: str, names: list[str], table: str = "") -> int:
    project = write_project(tmp_path, style, {"places.csv": places(names, [0, 10])},
                            table=f'style = "style.xml"\nzoom = 0\n{table}')
    return load_project(project).settings["buffer"]


def test_the_derived_buffer_grows_with_label_length_and_size(tmp_path: Path) -> None:
    short = buffer_of(tmp_path / "short", label_style(), SHORT)
    long = buffer_of(tmp_path / "long", label_style(), LONG)
    bigger = buffer_of(tmp_path / "bigger", label_style(size=28), LONG)
    assert short == 128 < long < bigger
    # a wrapped label is as wide as its wrap width (or its longest word), not its whole text
    assert buffer_of(tmp_path / "wrapped", label_style(attrs=' wrap-width="80"'), LONG) == 128


def test_the_project_setting_wins_and_travels_in_the_cache_key(tmp_path: Path) -> None:
    style = label_style(map_attrs=' buffer-size="64"')
    assert buffer_of(tmp_path / "a", style, LONG, "buffer = 300") == 300
    project = load_project(tmp_path / "a")
    assert get_media_type("maptiles").cache_settings(project.settings)["buffer"] == 300


def test_a_style_buffer_size_is_kept_but_a_narrow_one_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="farm_maptiles"):
        assert buffer_of(tmp_path / "wide", label_style(map_attrs=' buffer-size="512"'), LONG) == 512
        assert not caplog.records
        assert buffer_of(tmp_path / "narrow", label_style(map_attrs=' buffer-size="64"'), LONG) == 64
    [record] = caplog.records
    assert "buffer-size in style.xml is 64 px" in record.getMessage()
    assert "set [maptiles] buffer = " in record.getMessage()


@pytest.mark.parametrize(("table", "whole"), [("", True), ("buffer = 128", False)])
def test_labels_across_other_seams_come_out_whole(tmp_path: Path, table: str, whole: bool) -> None:
    """Another input of the kind: 4-tile metatiles at z4 (seams every 1024 px), bigger text, labels
    straddling the seams at 90 W and 90 E; and the same with the old fixed buffer, which cuts them."""
    names = [f"Seam label {i:02d} of another kind of input" for i in range(12)]
    lons = [(-90 if i < 6 else 90) + (13 if i % 2 else -13) for i in range(12)]
    project = write_project(tmp_path / "p", label_style(size=18), {"places.csv": places(names, lons)},
                            table=f'style = "style.xml"\nzoom = 4\nmetatile = 4\n{table}')
    assert (load_project(project).settings["buffer"] > 128) == whole
    run_local(project)
    differing = mosaic(project / "output", 4).compare(seamless(project / "style.xml", 4), 60)
    assert differing == 0 if whole else differing > 100
