"""A style reads only files inside its project, and no error quotes a file (security case mapnik-outside).

The secret is a root-only CSV in a folder beside the project; its first line is what Mapnik's CSV
plugin would quote. Every way out (absolute, ``..``, symlinks, ``base``, datasource templates,
symbolizer files, other datasource types) is refused at load, naming the layer or symbolizer and
the path, and the secret's text appears in no message and no tile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from farm_maptiles.references import ALLOW_ENV
from maptiles_helpers import csv_source, style_xml, write_project

from farm.errors import ProjectError, RenderError
from farm.mediatype import RenderContext
from farm.plugins import get_media_type
from farm.project import load_project

SAMPLE = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"
SECRET = "TOPSECRET-7f3a-do-not-show"
POINTS = 'wkt,name\n"POINT(0 0)",ORIGIN\n'
PIN = '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><rect width="20" height="20"/></svg>\n'


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A root-only folder outside the project with a CSV whose first line is the secret."""
    folder = tmp_path / "secret"
    folder.mkdir(mode=0o700)
    path = folder / "secret.csv"
    path.write_text(f"{SECRET},x\n1,2\n")
    path.chmod(0o600)
    shutil.copy(path, folder / "secret.shp")
    (folder / "pin.svg").write_text(PIN)
    return path


def layer_style(datasource: str, symbolizer: str = '<MarkersSymbolizer allow-overlap="true"/>',
                head: str = "", map_attrs: str = "") -> str:
    return style_xml(symbolizer, datasource, head, map_attrs)


def refused(project: Path) -> str:
    with pytest.raises(ProjectError) as caught:
        load_project(project)
    message = str(caught.value)
    assert SECRET not in message and caught.value.key == "[maptiles] style"
    assert not (project / "output").exists()
    return caught.value.message


# -- datasources -------------------------------------------------------------------------------


def test_the_mapnik_outside_case_is_refused_by_farm_submit(tmp_path: Path, secret: Path) -> None:
    """The case as reported: an absolute path to a root-only CSV; the error quoted its first line."""
    project = write_project(tmp_path / "p", layer_style(csv_source(str(secret))))
    done = subprocess.run([sys.executable, "-m", "farm", "submit", "--agents", "1", str(project)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert SECRET not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert f"layer 'places' (datasource type 'csv'): file: '{secret}' is an absolute path" in done.stderr
    assert not (project / "output").exists()


@pytest.mark.parametrize(
    ("datasource", "words"),
    [
        (csv_source("../secret/secret.csv"), "leads outside the project"),
        (csv_source("\n    {secret_dir}/secret.csv  \n"), "is an absolute path"),
        (csv_source("data/../../secret/secret.csv"), "leads outside the project"),
        (csv_source("link.csv"), "leads outside the project through a symlink"),
        (csv_source("linked/secret.csv"), "leads outside the project through a symlink"),
        (csv_source("secret.csv", '<Parameter name="base">{secret_dir}</Parameter>'), "base: "),
        (csv_source("secret.csv", '<Parameter name="base">../secret</Parameter>'), "base: "),
        (csv_source("places.csv", '<Parameter name="base">linked</Parameter>'), "through a symlink"),
        ('<Datasource base="tmpl"><Parameter name="type">csv</Parameter></Datasource>',
         "is an absolute path"),
        ('<Datasource><Parameter name="type">shape</Parameter><Parameter name="file">data/world</Parameter>'
         "</Datasource>", "through a symlink"),
    ],
    ids=["dotdot", "abs-in-whitespace", "inner-dotdot", "file-symlink", "folder-symlink", "abs-base",
         "dotdot-base", "symlinked-base", "template", "shapefile-part-symlink"],
)
def test_every_way_out_of_the_project_is_refused(
    tmp_path: Path, secret: Path, datasource: str, words: str
) -> None:
    head = f'<Datasource name="tmpl"><Parameter name="file">{secret}</Parameter></Datasource>'
    style = layer_style(datasource.format(secret_dir=secret.parent), head=head)
    project = write_project(tmp_path / "p", style, {"places.csv": POINTS, "data/world.shp": "x"})
    (project / "link.csv").symlink_to(secret)
    (project / "linked").symlink_to(secret.parent)
    (project / "data/world.dbf").symlink_to(secret)
    message = refused(project)
    line = next(n for n, text in enumerate(style.strip().splitlines(), 1) if "<Datasource" in text
                and "name=" not in text.split("<Datasource")[1][:10])
    assert message.startswith(f"cannot use style 'style.xml': style.xml:{line}: layer 'places' ")
    assert words in message


def test_a_missing_data_file_is_named_with_where_it_was_looked_for(tmp_path: Path) -> None:
    style = layer_style(csv_source("nowhere.csv"))
    message = refused(write_project(tmp_path / "p", style, table='style = "maps/style.xml"'))
    assert "layer 'places'" in message and "does not exist (looked for maps/nowhere.csv)" in message


def test_mapnik_errors_about_data_never_quote_it(tmp_path: Path) -> None:
    """A CSV inside the project that Mapnik cannot read: Mapnik's reason is given, the line of the file
    it quotes after it stays out of the error."""
    style = layer_style(csv_source("bad.csv"))
    project = write_project(tmp_path / "p", style, {"bad.csv": f"{SECRET},x\n1,2\n"})
    message = refused(project)
    assert ("layer 'places' (datasource type 'csv', file 'bad.csv'): Mapnik cannot read it as 'csv' data: "
            "CSV Plugin: could not detect column(s) with the name(s) of wkt, geojson, x/y, or "
            "latitude/longitude in: (Mapnik's next lines, which can quote the file, are left out)"
            ) in message, message


def test_mapnik_s_reason_names_project_files_relative_to_the_project(tmp_path: Path) -> None:
    """Mapnik names the file by its absolute path on this machine: the user reads it from the project."""
    style = layer_style('<Datasource><Parameter name="type">geojson</Parameter>'
                        '<Parameter name="file">../data/bad.geojson</Parameter></Datasource>')
    bad = '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": TOPSECRET}]}'
    project = write_project(tmp_path / "p", style, {"data/bad.geojson": bad},
                            table='style = "maps/style.xml"\nzoom = "0-1"')
    message = refused(project)
    assert ("Mapnik cannot read it as 'geojson' data: geojson_datasource: Failed to parse GeoJSON file "
            "'data/bad.geojson'") in message, message
    assert str(tmp_path) not in message and "encountered during parsing" not in message, message


def test_paths_outside_the_project_are_redacted_from_mapnik_s_words(tmp_path: Path) -> None:
    from farm_maptiles.mapnikerror import OUTSIDE, reason

    root = tmp_path / "work" / "p"
    said = reason(f"cannot open '{root}/a b/x.tif' nor /etc/farm/secret.conf, nor x/y\nTOPSECRET", root)
    assert said == (f"cannot open 'a b/x.tif' nor {OUTSIDE}, nor x/y (Mapnik's next lines, which can quote "
                    "the file, are left out)"), said


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ('<Parameter name="type">postgis</Parameter><Parameter name="dbname">gis</Parameter>',
         "datasource type 'postgis' is not allowed here (it reads data from outside the project)"),
        ('<Parameter name="type">gdal</Parameter><Parameter name="file">x.tif</Parameter>',
         "datasource type 'gdal' is not allowed here (its files can name further files"),
        ('<Parameter name="type">sqlite</Parameter><Parameter name="file">x.db</Parameter>',
         "datasource type 'sqlite' is not allowed here"),
        ('<Parameter name="type">nosuch</Parameter>', "datasource type 'nosuch' is not allowed here"),
        ("", "datasource type '' is not allowed here"),
    ],
)
def test_datasource_types_beyond_plain_files_are_refused_with_the_reason(
    tmp_path: Path, params: str, words: str
) -> None:
    message = refused(write_project(tmp_path / "p", layer_style(f"<Datasource>{params}</Datasource>")))
    assert "layer 'places'" in message and words in message and ALLOW_ENV in message


def test_the_operator_can_allow_a_database_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_ENV, "postgis, sqlite")
    source = ('<Datasource><Parameter name="type">postgis</Parameter>'
              '<Parameter name="host">127.0.0.1</Parameter><Parameter name="port">9</Parameter>'
              '<Parameter name="dbname">gis</Parameter>'
              '<Parameter name="table">places</Parameter></Datasource>')
    message = refused(write_project(tmp_path / "p", layer_style(source)))
    assert "not allowed" not in message  # allowed: Mapnik tried, and there is no database on port 9
    assert "layer 'places' (datasource type 'postgis'): Mapnik cannot read it" in message
    # sqlite allowed, but not its parameters that open other databases
    source = csv_source("x.db", '<Parameter name="attachdb">other@/etc/other.db</Parameter>').replace(
        ">csv<", ">sqlite<")
    message = refused(write_project(tmp_path / "q", layer_style(source), {"x.db": ""}))
    assert "parameter 'attachdb' is not allowed" in message


# -- symbolizer files and the rest -------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbolizer", "head", "map_attrs", "words"),
    [
        ('<MarkersSymbolizer file="{secret_dir}/pin.svg"/>', "", "",
         "MarkersSymbolizer in style 'labels': file"),
        ('<PointSymbolizer file="../secret/pin.svg"/>', "", "", "PointSymbolizer in style 'labels': file"),
        ('<PolygonPatternSymbolizer file="icons/../../secret/pin.svg"/>', "", "",
         "leads outside the project"),
        ('<PointSymbolizer file="pin.svg" base="out"/>', '<FileSource name="out">{secret_dir}</FileSource>',
         "", "is an absolute path"),
        ('<MarkersSymbolizer file="icons/[name].svg"/>', "", "", "is built from feature data"),
        ('<MarkersSymbolizer file="http://example.com/pin.svg"/>', "", "", "is a URL"),
        ('<MarkersSymbolizer file="icons/none.svg"/>', "", "", "does not exist (looked for icons/none.svg)"),
        ("<MarkersSymbolizer/>", "", ' background-image="../secret/pin.svg"', "Map background-image"),
    ],
    ids=["abs-marker", "dotdot-point", "inner-dotdot-pattern", "filesource", "from-data", "url", "missing",
         "background"],
)
def test_symbolizer_files_stay_inside_the_project(
    tmp_path: Path, secret: Path, symbolizer: str, head: str, map_attrs: str, words: str
) -> None:
    fill = {"secret_dir": secret.parent}
    style = layer_style(csv_source("places.csv"), symbolizer.format(**fill), head.format(**fill), map_attrs)
    message = refused(write_project(tmp_path / "p", style, {"places.csv": POINTS, "icons/pin.svg": PIN}))
    assert words in message


def test_built_in_markers_and_paths_that_stay_inside_are_allowed(tmp_path: Path) -> None:
    symbolizers = ('<MarkersSymbolizer file="shape://ellipse"/><PointSymbolizer file="../icons/pin.svg"/>'
                   '<PointSymbolizer file="pin.svg" base="icons"/>')
    head = '<FileSource name="icons">../icons</FileSource>'
    style = layer_style(csv_source("../data/places.csv"), symbolizers, head)
    project = write_project(tmp_path / "p", style, {"data/places.csv": POINTS, "icons/pin.svg": PIN},
                            table='style = "style/map.xml"\nzoom = 0')
    assert load_project(project).settings["style"] == "style/map.xml"


def test_a_style_file_symlinked_out_of_the_project_is_refused(tmp_path: Path, secret: Path) -> None:
    (secret.parent / "style.xml").write_text(layer_style(csv_source("secret.csv")).strip())
    project = write_project(tmp_path / "p", "<Map/>")
    (project / "style.xml").unlink()
    (project / "style.xml").symlink_to(secret.parent / "style.xml")
    message = refused(project)
    assert message == ("cannot use style 'style.xml': style.xml: the style file: 'style.xml' leads outside "
                       "the project through a symlink")


def test_entity_declarations_are_refused(tmp_path: Path, secret: Path) -> None:
    style = layer_style(csv_source("&x;")).replace(
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE Map [<!ENTITY x SYSTEM "{secret}">]>')
    message = refused(write_project(tmp_path / "p", style))
    assert message == ("cannot use style 'style.xml': style.xml:2: entity declaration 'x': styles may not "
                       "declare entities (Mapnik does not expand them)")


# -- on the agent ------------------------------------------------------------------------------


def test_an_agent_checks_the_style_again_before_it_renders(tmp_path: Path, secret: Path) -> None:
    """The agent's copy is checked on its own (a controller's word is not enough)."""
    readable = secret.parent / "places.csv"
    readable.write_text(f'wkt,name\n"POINT(0 0)",{SECRET}\n')
    project = write_project(tmp_path / "p", layer_style(csv_source("places.csv")), {"places.csv": POINTS})
    loaded = load_project(project)
    media = get_media_type("maptiles")
    job = next(iter(media.split(loaded)))
    (project / "style.xml").write_text(layer_style(csv_source(str(readable))).strip())
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()

    def render(settings: dict) -> str:
        ctx = RenderContext(project_dir=project, output_dir=out, work_dir=work, settings=settings,
                            threads=1, cache={}, deps={})
        with pytest.raises(RenderError) as caught:
            media.render(job, ctx)
        return str(caught.value)

    message = render(loaded.settings)
    assert "layer 'places'" in message and "is an absolute path" in message and SECRET not in message
    message = render({**loaded.settings, "style": "../secret/x.xml"})
    assert "[maptiles] style" in message and "outside" in message
    assert "[maptiles] buffer" in render({**loaded.settings, "buffer": "wide"})
    assert not any(out.iterdir())
    assert os.stat(secret).st_mode & 0o777 == 0o600


# -- files [assets] keeps from the agents --------------------------------------------------------


@pytest.mark.parametrize(
    ("assets", "csv", "icon", "words"),
    [
        ('exclude = ["data/**"]', "data/places.csv", "icons/pin.svg",
         "layer 'places' (datasource type 'csv'): file: '../data/places.csv' is data/places.csv in the "
         "project, but [assets] exclude leaves it out of the files sent to the agents (pattern 'data/**')"),
        ("", ".data/places.csv", "icons/pin.svg", "'.data' starts with '.'"),
        ("", "output/places.csv", "icons/pin.svg", "is output/places.csv in the project, but it is in the "
                                                   "output folder output/"),
        ('include = ["**/*.xml", "**/*.svg"]', "data/places.csv", "icons/pin.svg",
         "no [assets] include pattern matches it ('**/*.xml', '**/*.svg')"),
        ('exclude = ["icons/*.svg"]', "data/places.csv", "icons/pin.svg",
         "MarkersSymbolizer in style 'labels': file: '../icons/pin.svg' is icons/pin.svg in the project, "
         "but [assets] exclude leaves it out"),
    ],
    ids=["exclude", "hidden", "output", "include", "symbolizer"],
)
def test_a_style_reading_a_file_the_agents_never_get_is_refused_at_load(
    tmp_path: Path, assets: str, csv: str, icon: str, words: str
) -> None:
    """Before, it loaded, and every job failed on the agents naming the agent's copy of farm.toml."""
    style = layer_style(csv_source(f"../{csv}"), f'<MarkersSymbolizer file="../{icon}"/>')
    project = write_project(tmp_path / "p", style, {csv: POINTS, icon: PIN}, table='style = "style/map.xml"')
    with (project / "farm.toml").open("a") as toml:
        toml.write(f"\n[assets]\n{assets}\n")
    with pytest.raises(ProjectError) as caught:
        load_project(project)
    message = caught.value.message
    assert caught.value.key == "[maptiles] style" and caught.value.line == 6, caught.value
    assert message.startswith("cannot use style 'style/map.xml': style/map.xml:"), message
    assert words in message and "To fix: " in message, message


def test_a_shapefile_part_left_out_is_refused_by_farm_submit(tmp_path: Path) -> None:
    """A shapefile names its .dbf only by its stem: a pattern that leaves that part out is found too."""
    project = tmp_path / "world_map"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("output", ".farm"))
    with (project / "farm.toml").open("a") as toml:
        toml.write('\n[assets]\nexclude = ["**/*.dbf"]\n')
    done = subprocess.run([sys.executable, "-m", "farm", "submit", "--agents", "1", str(project)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    where = f"{project / 'farm.toml'}:8: [maptiles] style: cannot use style 'world.xml': world.xml:"
    assert where in done.stderr, done.stderr
    assert ("'data/naturalearth_lowres.dbf' is data/naturalearth_lowres.dbf in the project, but [assets] "
            "exclude leaves it out of the files sent to the agents (pattern '**/*.dbf')") in done.stderr
    assert not (project / "output").exists()
