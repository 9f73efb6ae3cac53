"""The maptiles media type, with real Mapnik renders of the world_map sample's style and data.

Tiles made by the plugin are checked against renders this file does itself (its own
tile arithmetic, its own `mapnik.Map`), never against the plugin's own helpers.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import textwrap
from pathlib import Path

import mapnik
import pytest
from farm_maptiles import mediatype as maptiles_mediatype
from farm_maptiles.bundle import read_bundle
from farm_maptiles.grouping import job_metatiles
from farm_maptiles.pngencode import encode_png, rgba_pixels
from farm_maptiles.tilemath import (
    MAX_LATITUDE,
    metatile_count,
    metatiles,
    tile_range,
    tms_row,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.errors import ProjectError
from farm.mediatype import Job, RenderContext
from farm.plugins import get_media_type
from farm.project import load_project
from farm.testing import run_local

SAMPLE = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"
TILE = 256
EARTH_HALF = math.pi * 6378137.0


# -- helpers independent of the plugin ---------------------------------------------------------


def make_project(folder: Path, table: str, name: str = "world_test") -> Path:
    """A copy of the world_map style and data with its own ``[maptiles]`` table."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE / "world.xml", folder / "world.xml")
    shutil.copytree(SAMPLE / "data", folder / "data")
    (folder / "farm.toml").write_text(
        f'[project]\nname = "{name}"\nmedia_type = "maptiles"\n\n[maptiles]\n{textwrap.dedent(table)}\n'
    )
    return folder


def lonlat_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The slippy-map formula (OSM wiki), written out again here on purpose."""
    n = 2**z
    lat_rad = math.radians(lat)
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.log(math.tan(lat_rad) + 1.0 / math.cos(lat_rad)) / math.pi) / 2.0 * n)
    return min(x, n - 1), min(y, n - 1)


def direct_render(project: Path, z: int, x: int, y: int) -> mapnik.Image:
    """One 256 px tile rendered on its own, the way a single-tile server would."""
    m = mapnik.Map(TILE, TILE)
    mapnik.load_map_from_string(m, (project / "world.xml").read_text(), False, str(project))
    m.srs = "epsg:3857"
    m.buffer_size = 128  # world.xml sets buffer-size="128"
    span = 2 * EARTH_HALF / 2**z
    m.zoom_to_box(mapnik.Box2d(-EARTH_HALF + x * span, EARTH_HALF - (y + 1) * span,
                               -EARTH_HALF + (x + 1) * span, EARTH_HALF - y * span))
    image = mapnik.Image(TILE, TILE)
    mapnik.render(m, image)
    return image


def tile_files(output: Path) -> set[tuple[int, int, int]]:
    return {
        (int(p.parts[-3]), int(p.parts[-2]), int(p.stem))
        for p in (output / "tiles").rglob("*.png")
    }


def render_job(media, project, job: Job, out: Path, cache: dict) -> dict[str, bytes]:
    out.mkdir(parents=True)
    work = out.parent / (out.name + "-work")
    work.mkdir()
    ctx = RenderContext(project_dir=project.root, output_dir=out, work_dir=work, settings=project.settings,
                        threads=1, cache=cache, deps={})
    media.render(job, ctx)
    (bundle,) = out.rglob("*.tiles")  # one bundle per job, checked as the controller checks it
    wanted = [r for _, _, r in job_metatiles(job.params)]  # one metatile, or a row's group
    return {f"tiles/{z}/{x}/{y}.png": data for z, x, y, data in read_bundle(bundle, wanted)}


# -- tile arithmetic ----------------------------------------------------------------------------


def test_tms_row_counts_from_the_south() -> None:
    assert tms_row(0, 0) == 0
    assert tms_row(1, 0) == 1
    assert tms_row(3, 2) == 5


def test_world_tile_range_is_every_tile() -> None:
    for z in range(6):
        r = tile_range([-180, -MAX_LATITUDE, 180, MAX_LATITUDE], z)
        assert (r.x0, r.y0, r.x1, r.y1) == (0, 0, 2**z - 1, 2**z - 1)


def test_tile_range_matches_the_slippy_map_formula() -> None:
    bbox = [2.25, 41.3, 19.0, 54.8]  # from Barcelona to the Baltic
    for z in range(1, 10):
        r = tile_range(bbox, z)
        assert (r.x0, r.y0) == lonlat_tile(bbox[0], bbox[3], z)
        assert (r.x1, r.y1) == lonlat_tile(bbox[2], bbox[1], z)


@settings(max_examples=60, deadline=None)
@given(
    west=st.floats(-180, 179), width=st.floats(0.01, 360),
    south=st.floats(-85, 84), height=st.floats(0.01, 170),
    z=st.integers(0, 6), metatile=st.sampled_from([1, 2, 4, 8, 16]),
)
def test_metatiles_cover_the_bbox_tiles_once(west, width, south, height, z, metatile) -> None:
    bbox = [west, south, min(west + width, 180.0), min(south + height, MAX_LATITUDE)]
    expected = set(tile_range(bbox, z).tiles())
    seen: list[tuple[int, int]] = []
    metas = list(metatiles(bbox, z, metatile))
    for meta in metas:
        size = min(metatile, 2**z)
        assert meta.size == size
        assert meta.x % size == 0 and meta.y % size == 0
        assert meta.key == f"{z}/{meta.x}/{meta.y}"
        tiles = list(meta.wanted.tiles())
        assert tiles, "a metatile with nothing to cut is a wasted job"
        assert all(meta.x <= x < meta.x + size and meta.y <= y < meta.y + size for x, y in tiles)
        seen.extend(tiles)
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert metatile_count(bbox, z, metatile) == len(metas)


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('style = "world.xml"\nzoom = "5-3"', "zoom", "above"),
        ('style = "world.xml"\nzoom = "0..4"', "zoom", "expected a zoom"),
        ('style = "world.xml"\nzoom = 23', "zoom", "outside 0..22"),
        ('style = "world.xml"\nzoom = "-1"', "zoom", "expected a zoom"),
        ('style = "world.xml"\nzoom = true', "zoom", "expected a zoom"),
        ('style = "missing.xml"', "style", "does not exist"),
        ('style = "farm.toml"', "style", ".xml"),
        ('style = "broken.xml"', "style", "not well-formed XML"),
        ('style = "nodata.xml"', "style", "does not exist"),
        ('style = "nodbf.xml"', "style", "data/no_dbf.dbf does not exist (Mapnik reads a shapefile's"),
        ('style = "noshx.xml"', "style", "data/no_shx.shx does not exist (Mapnik reads a shapefile's"),
        ('style = "world.xml"\nbbox = [10, 0, 5, 5]', "bbox", "west < east"),
        ('style = "world.xml"\nbbox = [0, 0, 10]', "bbox", "[west, south, east, north]"),
        ('style = "world.xml"\nbbox = [-200, 0, 10, 10]', "bbox", "-180"),
        ('style = "world.xml"\nbbox = [0, 86, 10, 89]', "bbox", "Web Mercator"),
        ('style = "world.xml"\nbbox = "world"', "bbox", "[west, south, east, north]"),
        ('style = "world.xml"\nformat = "jpeg"', "format", "'png8'"),
        ('style = "world.xml"\ntile_size = "256"', "tile_size", "integer"),
        ('style = "world.xml"\nmetatile = 3', "metatile", "power of two"),
        ('style = "world.xml"\nbuffer = -1', "buffer", "at least 0"),
        ('style = "world.xml"\nbuffer = 5000', "buffer", "at most 2048"),
        ('style = "world.xml"\nbuffer = "wide"', "buffer", "integer"),
        ('style = "world.xml"\nzooom = "0-3"', "zooom", "unknown key"),
        ("zoom = 3", "style", "required"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, table: str, key: str, words: str) -> None:
    folder = make_project(tmp_path / "p", table)
    (folder / "broken.xml").write_text("<Map><Style name='x'>")
    (folder / "nodata.xml").write_text(
        (SAMPLE / "world.xml").read_text().replace("data/naturalearth_cities", "data/nowhere")
    )
    for missing in ("dbf", "shx"):  # a shapefile whose .dbf or .shx was left behind
        for ext in {"shp", "shx", "dbf"} - {missing}:
            data = folder / "data"
            shutil.copy(data / f"naturalearth_cities.{ext}", data / f"no_{missing}.{ext}")
        (folder / f"no{missing}.xml").write_text(
            (SAMPLE / "world.xml").read_text().replace("data/naturalearth_cities", f"data/no_{missing}"))
    with pytest.raises(ProjectError) as caught:
        load_project(folder)
    assert caught.value.key == f"[maptiles] {key}"
    assert words in caught.value.message
    assert str(folder / "farm.toml") in str(caught.value)


def test_settings_are_normalised(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "p", 'style = "world.xml"\nzoom = 3\nbbox = [-180, -90, 180, 90]')
    s = load_project(folder).settings
    assert (s["minzoom"], s["maxzoom"]) == (3, 3)
    assert s["bbox"] == [-180.0, -MAX_LATITUDE, 180.0, MAX_LATITUDE]
    assert (s["tile_size"], s["metatile"], s["format"]) == (256, 8, "png")


def test_available_says_why_when_mapnik_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_media_type("maptiles").available() is None
    monkeypatch.setitem(__import__("sys").modules, "mapnik", None)
    reason = maptiles_mediatype.mapnik_missing()
    assert reason is not None and "mapnik" in reason


# -- splitting ------------------------------------------------------------------------------------


def test_split_is_exact_aligned_and_stable(tmp_path: Path) -> None:
    bbox = [-10.0, 35.0, 30.0, 60.0]
    folder = make_project(tmp_path / "p", f'style = "world.xml"\nzoom = "0-6"\nbbox = {bbox}')
    project = load_project(folder)
    media = get_media_type("maptiles")
    jobs = list(media.split(project))
    assert media.count(project) == len(jobs)
    assert [j.key for j in jobs] == [j.key for j in media.split(project)]
    assert len({j.key for j in jobs}) == len(jobs)
    for job in jobs:
        z, x, y = (int(v) for v in job.key.split("/"))
        size = min(8, 2**z)
        assert x % size == 0 and y % size == 0 and job.params["size"] == size
        x0, y0, x1, y1 = job.params["tiles"]
        nw, se = lonlat_tile(bbox[0], bbox[3], z), lonlat_tile(bbox[2], bbox[1], z)
        assert max(x, nw[0]) == x0 and max(y, nw[1]) == y0
        assert min(x + size - 1, se[0]) == x1 and min(y + size - 1, se[1]) == y1
    # z6 over Europe: columns 30..37 and rows 18..25 touch metatiles at x 24, 32 and y 16, 24
    z6 = sorted(j.key for j in jobs if j.key.startswith("6/"))
    assert z6 == ["6/24/16", "6/24/24", "6/32/16", "6/32/24"]


# -- rendering and collating ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The world at zooms 0-4, rendered once through the whole pipeline."""
    folder = make_project(tmp_path_factory.mktemp("world"), 'style = "world.xml"\nzoom = "0-4"\n'
                          'attribution = "Made with Natural Earth"')
    return folder, run_local(folder)


def test_tiles_match_a_direct_single_tile_render(world) -> None:
    folder, _ = world
    output = folder / "output"
    expected = {(z, x, y) for z in range(5) for x in range(2**z) for y in range(2**z)}
    assert tile_files(output) == expected
    identical = 0
    for z, x, y in sorted(expected):
        ours = mapnik.Image.open(str(output / f"tiles/{z}/{x}/{y}.png"))
        assert (ours.width(), ours.height()) == (TILE, TILE)
        # labels near metatile edges may be placed differently; everything else must agree
        differing = ours.compare(direct_render(folder, z, x, y), 16)
        assert differing <= TILE * TILE // 100, f"tile {z}/{x}/{y}: {differing} pixels differ"
        identical += differing == 0
    assert identical >= 0.9 * len(expected)
    # the comparison can fail: a neighbouring tile is far off
    wrong = mapnik.Image.open(str(output / "tiles/3/4/2.png")).compare(direct_render(folder, 3, 5, 2), 16)
    assert wrong > TILE * TILE // 10


def test_mbtiles_has_every_tile_with_tms_rows_and_metadata(world) -> None:
    folder, run = world
    output = folder / "output"
    mbtiles = output / "world_test.mbtiles"
    assert run.outputs == [mbtiles, output / "tiles"]
    assert not (output / "world_test.mbtiles-wal").exists()
    db = sqlite3.connect(mbtiles)
    try:
        assert db.execute("SELECT count(*) FROM tiles").fetchone()[0] == 341
        for z in range(5):
            assert db.execute("SELECT count(*) FROM tiles WHERE zoom_level = ?", (z,)).fetchone()[0] == 4**z
        # XYZ 2/1/0 (the Arctic, west of Greenwich) is TMS row 3
        query = "SELECT tile_data FROM tiles WHERE zoom_level = 2 AND tile_column = 1 AND tile_row = ?"
        north = db.execute(query, (3,)).fetchone()[0]
        assert north == (output / "tiles/2/1/0.png").read_bytes()
        south = db.execute(query, (0,)).fetchone()[0]
        assert south == (output / "tiles/2/1/3.png").read_bytes() != north
        meta = dict(db.execute("SELECT name, value FROM metadata"))
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        db.close()
    assert meta["name"] == "world_test" and meta["format"] == "png"
    assert (meta["minzoom"], meta["maxzoom"]) == ("0", "4")
    west, south, east, north = (float(v) for v in meta["bounds"].split(","))
    assert (west, east) == (-180.0, 180.0) and abs(north - 85.0511) < 1e-4 and abs(south + 85.0511) < 1e-4
    assert [float(v) for v in meta["center"].split(",")] == [0.0, 0.0, 0.0]
    assert meta["attribution"] == "Made with Natural Earth"


def test_rerun_into_the_same_output_replaces_tiles(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "p", 'style = "world.xml"\nzoom = "0-2"\nformat = "png8"')
    run_local(folder)
    first = {p: p.read_bytes() for p in (folder / "output").rglob("*.png")}
    run_local(folder)
    assert {p: p.read_bytes() for p in (folder / "output").rglob("*.png")} == first
    with sqlite3.connect(folder / "output" / "world_test.mbtiles") as db:
        assert db.execute("SELECT count(*) FROM tiles").fetchone()[0] == 21
    assert (folder / "output/tiles/0/0/0.png").read_bytes()[1:4] == b"PNG"


def test_only_tiles_inside_the_bbox_are_written(tmp_path: Path) -> None:
    bbox = [-10.0, 35.0, 30.0, 60.0]
    folder = make_project(tmp_path / "p", f'style = "world.xml"\nzoom = "3-5"\nbbox = {bbox}')
    run_local(folder)
    expected = set()
    for z in range(3, 6):
        (x0, y0), (x1, y1) = lonlat_tile(bbox[0], bbox[3], z), lonlat_tile(bbox[2], bbox[1], z)
        expected |= {(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}
    assert tile_files(folder / "output") == expected
    with sqlite3.connect(folder / "output" / "world_test.mbtiles") as db:
        assert db.execute("SELECT count(*) FROM tiles").fetchone()[0] == len(expected)
    z, x, y = max(expected)
    assert mapnik.Image.open(str(folder / f"output/tiles/{z}/{x}/{y}.png")).compare(
        direct_render(folder, z, x, y), 16) <= TILE * TILE // 100


def test_the_same_metatile_renders_byte_identical(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "p", 'style = "world.xml"\nzoom = 5')
    project = load_project(folder)
    media = get_media_type("maptiles")
    job = next(j for j in media.split(project) if j.key == "5/16/8")  # Europe: land, sea, labels
    cache: dict = {}
    first = render_job(media, project, job, tmp_path / "a", cache)
    again = render_job(media, project, job, tmp_path / "b", cache)  # same worker, warm caches
    fresh = render_job(media, project, job, tmp_path / "c", {})  # another worker
    assert len(first) == 64 and first == again == fresh
    # tiles of one flat colour (open sea) reuse one encoding: it must equal encoding that tile alone
    solid = 0
    for x in range(16, 24):
        for y in range(8, 16):
            alone = direct_render(folder, 5, x, y)
            if alone.view(0, 0, TILE, TILE).is_solid():
                assert first[f"tiles/5/{x}/{y}.png"] == encode_png(rgba_pixels(alone), TILE * 4, 0, 0, TILE, TILE)
                solid += 1
    assert solid >= 2


def test_a_changed_style_is_reloaded_by_a_warm_worker(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "p", 'style = "world.xml"\nzoom = 0')
    project = load_project(folder)
    media = get_media_type("maptiles")
    job = next(iter(media.split(project)))
    cache: dict = {}
    before = render_job(media, project, job, tmp_path / "a", cache)
    style = folder / "world.xml"
    style.write_text(style.read_text().replace('background-color="#aad3df"', 'background-color="#000000"'))
    after = render_job(media, project, job, tmp_path / "b", cache)
    assert before != after


def test_a_changed_data_file_is_read_again_by_a_warm_worker(tmp_path: Path) -> None:
    """Mapnik reads a CSV once, at load: the worker must notice the file changed, not only the style."""
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "cases/maptiles-style-in-subfolder/style/map.xml", folder / "map.xml")
    shutil.copytree(Path(__file__).parent / "cases/maptiles-style-in-subfolder/style/icons", folder / "icons")
    (folder / "points.csv").write_text('wkt,name\n"POINT(0 0)",origin\n')
    (folder / "farm.toml").write_text('[project]\nname = "pins"\nmedia_type = "maptiles"\n\n'
                                      '[maptiles]\nstyle = "map.xml"\nzoom = 0\n')
    project = load_project(folder)
    media = get_media_type("maptiles")
    job = next(iter(media.split(project)))
    cache: dict = {}
    before = render_job(media, project, job, tmp_path / "a", cache)
    (folder / "points.csv").write_text('wkt,name\n"POINT(90 45)",elsewhere\n')
    after = render_job(media, project, job, tmp_path / "b", cache)
    assert before != after == render_job(media, project, job, tmp_path / "c", {})


def test_submit_embedded_on_two_agents(tmp_path: Path) -> None:
    from farm.embedded import submit_embedded

    folder = make_project(tmp_path / "p", 'style = "world.xml"\nzoom = "0-4"\nmetatile = 4')
    summary = submit_embedded(folder, agents=2)
    assert summary.ok, summary.failures
    # 23 metatiles; adaptive chunks may group those of a row (tests/test_maptiles_grouping.py)
    assert summary.total == summary.done <= 1 + 1 + 1 + 4 + 16
    output = folder / "output"
    assert sorted(summary.outputs) == sorted([str(output / "world_test.mbtiles"), str(output / "tiles")])
    assert len(tile_files(output)) == 341
    with sqlite3.connect(output / "world_test.mbtiles") as db:
        assert db.execute("SELECT count(*) FROM tiles").fetchone()[0] == 341
    local = make_project(tmp_path / "q", 'style = "world.xml"\nzoom = "4"\nmetatile = 4')
    run_local(local)
    same = sum((output / name).read_bytes() == (local / "output" / name).read_bytes()
               for name in (f"tiles/4/{x}/{y}.png" for x in range(16) for y in range(16)))
    assert same == 256  # a metatile renders the same on an agent as in this process
