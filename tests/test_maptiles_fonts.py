"""Every face-name in a style (any symbolizer, any fontset) must be installed or shipped in the project.

The shipped font is Mapnik's own DejaVu Sans Mono Oblique with its family renamed at test time
(`write_renamed_font`), so no face of its name exists outside the project's font folder.
"""

from __future__ import annotations

from pathlib import Path

import mapnik
import pytest
from maptiles_helpers import SHIPPED_FACE, style_xml, write_project, write_renamed_font

from farm.embedded import submit_embedded
from farm.errors import ProjectError
from farm.project import load_project

POINTS = 'wkt,name\n"POINT(0 0)",ORIGIN\n'
PIN = '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><rect width="20" height="20"/></svg>\n'


def label_style(symbolizer: str, head: str = "", map_attrs: str = "") -> str:
    return style_xml(symbolizer, head=head, map_attrs=map_attrs)


def refused(project: Path) -> str:
    with pytest.raises(ProjectError) as caught:
        load_project(project)
    assert caught.value.key == "[maptiles] style"
    return caught.value.message


@pytest.mark.parametrize(
    ("symbolizer", "head", "where"),
    [
        ('<TextSymbolizer face-name="Nowhere Sans Book" size="20">[name]</TextSymbolizer>', "",
         "in style 'labels', TextSymbolizer"),
        ('<ShieldSymbolizer file="pin.svg" face-name="Nowhere Sans Book" size="10">[name]'
         "</ShieldSymbolizer>", "", "in style 'labels', ShieldSymbolizer"),
        ('<TextSymbolizer face-name="DejaVu Sans Book" size="20">'
         '<Format face-name="Nowhere Sans Book">[name]</Format></TextSymbolizer>', "",
         "in style 'labels', TextSymbolizer"),
        ('<TextSymbolizer fontset-name="fallback" size="20">[name]</TextSymbolizer>',
         '<FontSet name="fallback"><Font face-name="DejaVu Sans Book"/>\n'
         '<Font face-name="Nowhere Sans Book"/></FontSet>', "in FontSet 'fallback', <Font>"),
    ],
    ids=["text", "shield", "format", "fontset-member"],
)
def test_a_missing_face_anywhere_is_refused_naming_it(
    tmp_path: Path, symbolizer: str, head: str, where: str
) -> None:
    style = label_style(symbolizer, head)
    project = write_project(tmp_path / "p", style, {"places.csv": POINTS, "pin.svg": PIN})
    message = refused(project)
    lines = style.strip().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if 'face-name="Nowhere' in text)
    assert message.startswith(f"cannot use style 'style.xml': style.xml:{line}: face-name 'Nowhere Sans ")
    assert where in message and "is not installed" in message


def test_a_near_miss_is_answered_with_the_installed_face(tmp_path: Path) -> None:
    style = label_style('<TextSymbolizer face-name="DejaVu Sans" size="20">[name]</TextSymbolizer>')
    message = refused(write_project(tmp_path / "p", style, {"places.csv": POINTS}))
    assert "similar installed faces:" in message and "'DejaVu Sans Book'" in message


def test_a_font_shipped_in_the_project_renders_on_the_agent(tmp_path: Path) -> None:
    """font-directory is relative to the style file (here in a subfolder), and the agent registers it too."""
    text = f'<TextSymbolizer face-name="{SHIPPED_FACE}" size="30">[name]</TextSymbolizer>'
    shipped = write_project(tmp_path / "shipped", label_style(text, map_attrs=' font-directory="fonts"'),
                            {"style/places.csv": POINTS}, table='style = "style/map.xml"\nzoom = 0')
    write_renamed_font(shipped / "style/fonts/mono.ttf")
    summary = submit_embedded(shipped, agents=1)
    assert summary.ok, summary.failures
    # the same glyphs under their installed name: the label is drawn, and with that font
    original = text.replace(SHIPPED_FACE, "DejaVu Sans Mono Oblique")
    installed = write_project(tmp_path / "installed", label_style(original), {"places.csv": POINTS},
                              table='style = "style.xml"\nzoom = 0')
    assert submit_embedded(installed, agents=1).ok
    ours = mapnik.Image.open(str(shipped / "output/tiles/0/0/0.png"))
    assert not ours.view(0, 0, 256, 256).is_solid()
    assert ours.compare(mapnik.Image.open(str(installed / "output/tiles/0/0/0.png")), 0) == 0


def test_a_shipped_font_is_only_for_the_style_that_ships_it(tmp_path: Path) -> None:
    text = f'<TextSymbolizer face-name="{SHIPPED_FACE}" size="30">[name]</TextSymbolizer>'
    shipped = write_project(tmp_path / "a", label_style(text, map_attrs=' font-directory="fonts"'),
                            {"places.csv": POINTS})
    write_renamed_font(shipped / "fonts/mono.ttf")
    assert load_project(shipped).settings["style"] == "style.xml"
    assert SHIPPED_FACE not in mapnik.FontEngine.face_names()  # registered on the style's map only
    message = refused(write_project(tmp_path / "b", label_style(text), {"places.csv": POINTS}))
    assert f"face-name {SHIPPED_FACE!r}" in message and "is not installed" in message


@pytest.mark.parametrize(
    ("folder", "words"),
    [
        ("../elsewhere", "leads outside the project"),
        ("{outside}", "is an absolute path"),
        ("places.csv", "is not a folder in the project"),
        ("missing", "is not a folder in the project"),
    ],
)
def test_a_font_directory_must_be_a_folder_inside_the_project(
    tmp_path: Path, folder: str, words: str
) -> None:
    outside = tmp_path / "elsewhere"
    write_renamed_font(outside / "mono.ttf")
    text = f'<TextSymbolizer face-name="{SHIPPED_FACE}" size="30">[name]</TextSymbolizer>'
    attrs = f' font-directory="{folder.format(outside=outside)}"'
    project = write_project(tmp_path / "p", label_style(text, map_attrs=attrs), {"places.csv": POINTS})
    message = refused(project)
    assert message.startswith("cannot use style 'style.xml': style.xml:2: Map font-directory: ")
    assert words in message
