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


# -- the fonts [assets] sends: the agents' font-directory ------------------------------------

SHIPPED_LABEL = f'<TextSymbolizer face-name="{SHIPPED_FACE}" size="30">[name]</TextSymbolizer>'


def bundled_font(dest: Path, name: str = "DejaVuSans-Bold.ttf") -> Path:
    """A copy of one of Mapnik's bundled fonts (its face installed anyway): a font file that is no use."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes((Path(mapnik.paths.fontscollectionpath) / name).read_bytes())
    return dest


@pytest.mark.parametrize(
    ("style_path", "folder", "assets", "why"),
    [
        ("style.xml", "fonts", 'exclude = ["fonts/**"]',
         "[assets] exclude leaves it out of the files sent to the agents (pattern 'fonts/**'). "
         "To fix: remove the pattern from [assets] exclude in farm.toml"),
        ("style/map.xml", "fonts", 'exclude = ["**/mono.ttf"]',
         "[assets] exclude leaves it out of the files sent to the agents (pattern '**/mono.ttf'). "
         "To fix: remove the pattern from [assets] exclude in farm.toml"),
        ("style.xml", "fonts", 'include = ["*.xml", "*.csv", "fonts/other.ttf"]',
         "no [assets] include pattern matches it ('*.xml', '*.csv', 'fonts/other.ttf'), so the agents "
         "never get it. To fix: add the file to [assets] include in farm.toml"),
        ("style.xml", ".fonts", "", "farm never sends it to the agents: '.fonts' starts with '.'. "
         "To fix: rename it so that no name in its path starts with '.'"),
    ],
    ids=["exclude-folder", "exclude-file-beside-subfolder-style", "include", "dot-folder"],
)
def test_a_face_only_in_a_font_file_the_agents_do_not_get_is_refused_naming_file_and_pattern(
    tmp_path: Path, style_path: str, folder: str, assets: str, why: str
) -> None:
    """The face is in a font file left out, while another font file of the folder travels."""
    style = label_style(SHIPPED_LABEL, map_attrs=f' font-directory="{folder}"')
    here = style_path.rpartition("/")[0]
    fonts = f"{here}/{folder}".lstrip("/")
    project = write_project(tmp_path / "p", style, {f"{here}/places.csv".lstrip("/"): POINTS},
                            table=f'style = "{style_path}"\nzoom = 0\n\n[assets]\n{assets}')
    write_renamed_font(project / fonts / "mono.ttf")
    bundled_font(project / fonts / "other.ttf")
    line = next(n for n, text in enumerate(style.strip().splitlines(), 1) if "face-name" in text)
    assert refused(project) == (
        f"cannot use style {style_path!r}: {style_path}:{line}: face-name {SHIPPED_FACE!r} (in style "
        f"'labels', TextSymbolizer) is only in the font file {fonts}/mono.ttf of the style's font-directory, "
        f"but {why}, or use another face in the style")


def test_a_font_directory_none_of_whose_files_travel_is_refused(tmp_path: Path) -> None:
    """No face uses its fonts, but farm sends files, not folders: the agents would have no such folder."""
    style = label_style('<TextSymbolizer face-name="DejaVu Sans Book" size="30">[name]</TextSymbolizer>',
                        map_attrs=' font-directory="fonts"')
    project = write_project(tmp_path / "p", style, {"places.csv": POINTS},
                            table='style = "style.xml"\nzoom = 0\n\n[assets]\nexclude = ["fonts/**"]')
    write_renamed_font(project / "fonts/mono.ttf")
    message = refused(project)
    assert message.startswith("cannot use style 'style.xml': style.xml:2: Map font-directory: 'fonts' has "
                              "no file that reaches the agents, so they would not have the folder "
                              "(fonts/mono.ttf")
    assert "(pattern 'fonts/**')" in message and "remove the Map's font-directory attribute" in message


def test_fonts_left_out_that_no_face_uses_are_fine_on_the_agents(tmp_path: Path) -> None:
    """The agents' font-directory then holds no font at all (only a licence): installed faces still draw."""
    style = label_style('<TextSymbolizer face-name="DejaVu Sans Book" size="30">[name]</TextSymbolizer>',
                        map_attrs=' font-directory="fonts"')
    project = write_project(tmp_path / "p", style, {"places.csv": POINTS, "fonts/LICENSE": "free\n"},
                            table='style = "style.xml"\nzoom = 0\n\n[assets]\nexclude = ["fonts/*.ttf"]')
    write_renamed_font(project / "fonts/mono.ttf")
    summary = submit_embedded(project, agents=1)
    assert summary.ok, summary.failures
    assert not mapnik.Image.open(str(project / "output/tiles/0/0/0.png")).view(0, 0, 256, 256).is_solid()


def test_a_font_file_symlinked_out_of_the_project_is_refused(tmp_path: Path) -> None:
    font = write_renamed_font(tmp_path / "elsewhere/mono.ttf")
    style = label_style(SHIPPED_LABEL, map_attrs=' font-directory="fonts"')
    project = write_project(tmp_path / "p", style, {"places.csv": POINTS})
    (project / "fonts").mkdir()
    (project / "fonts/mono.ttf").symlink_to(font)
    assert refused(project) == ("cannot use style 'style.xml': style.xml:2: Map font-directory: font file: "
                                "'fonts/mono.ttf' leads outside the project through a symlink")


def test_an_empty_font_directory_is_refused_as_one_the_agents_would_not_have(tmp_path: Path) -> None:
    style = label_style('<TextSymbolizer face-name="DejaVu Sans Book" size="30">[name]</TextSymbolizer>',
                        map_attrs=' font-directory="fonts"')
    project = write_project(tmp_path / "p", style, {"places.csv": POINTS})
    (project / "fonts").mkdir()
    assert refused(project) == (
        "cannot use style 'style.xml': style.xml:2: Map font-directory: 'fonts' holds no file, and farm "
        "sends files, not folders: the agents would not have it. To fix: put the style's fonts in it, or "
        "remove the font-directory attribute")
