"""A map run over an earlier run's output removes the tiles it did not make, from the MBTiles
file and tiles/ alike (`farm_maptiles.leftovers`): outside its zoom range and bbox, and those of
its failed jobs. Real Mapnik, a real embedded farm, real SQLite."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from farm_maptiles.leftovers import failed_ranges, remove_from_folder, remove_from_mbtiles, wanted
from farm_maptiles.mbtiles import MBTilesWriter
from farm_maptiles.tilemath import tile_range
from maptiles_helpers import write_project

from farm.embedded import submit_embedded

WORLD = [-180, -85.0511, 180, 85.0511]
STYLE = '<Map background-color="steelblue" srs="epsg:3857"/>'


def rows(mbtiles: Path) -> set[tuple[int, int, int]]:
    """(z, x, XYZ y) of every tile in the file."""
    with sqlite3.connect(mbtiles) as db:
        return {(z, x, (1 << z) - 1 - row) for z, x, row in db.execute(
            "SELECT zoom_level, tile_column, tile_row FROM tiles")}


def files(tiles: Path) -> set[tuple[int, int, int]]:
    return {(int(p.parent.parent.name), int(p.parent.name), int(p.stem)) for p in tiles.glob("*/*/*.png")}


def expected(bbox: list[float], zooms: range) -> set[tuple[int, int, int]]:
    return {(z, x, y) for z in zooms for x, y in tile_range(bbox, z).tiles()}


def run(root: Path, zoom: str, bbox: list[float]) -> None:
    (root / "farm.toml").write_text(f'[project]\nname = "mt"\nmedia_type = "maptiles"\n\n[maptiles]\n'
                                    f'style = "style.xml"\nzoom = "{zoom}"\nbbox = {bbox}\n')
    assert submit_embedded(root, agents=1).ok


def test_a_smaller_run_removes_what_the_earlier_one_made_beyond_it(tmp_path, caplog):
    root = write_project(tmp_path / "p", STYLE)
    run(root, "0-2", WORLD)
    output = root / "output"
    assert rows(output / "mt.mbtiles") == files(output / "tiles") == expected(WORLD, range(3))
    (output / "tiles" / "notes.txt").write_text("mine")  # not a tile: stays
    (output / "tiles" / "2" / "keep.txt").write_text("mine")
    east = [0, 0, 180, 85]
    with caplog.at_level(logging.WARNING):
        run(root, "0-1", east)
    made = expected(east, range(2))
    assert rows(output / "mt.mbtiles") == files(output / "tiles") == made
    assert (output / "tiles" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (output / "tiles" / "2").iterdir()) == ["keep.txt"]
    assert (1, 0, 0) not in made and not (output / "tiles" / "1" / "0").exists()  # emptied folders go too
    gone = 21 - len(made)
    (line,) = [r.getMessage() for r in caplog.records if "earlier run left" in r.getMessage()]
    assert line == (f"mt: removed {gone} tiles from mt.mbtiles and {gone} from tiles/ that an earlier run "
                    "left and this run did not make (outside zoom 0-1 and this bbox)")
    with sqlite3.connect(output / "mt.mbtiles") as db:
        assert dict(db.execute("SELECT name, value FROM metadata WHERE name LIKE '%zoom'")) == {
            "minzoom": "0", "maxzoom": "1"}


def test_the_tiles_of_failed_jobs_are_removed_and_no_others(tmp_path):
    settings = {"bbox": WORLD, "minzoom": 0, "maxzoom": 2, "metatile": 2}
    everything = expected(WORLD, range(3))
    writer = MBTilesWriter(tmp_path / "t.mbtiles")
    writer.add_tiles([(z, x, y, b"png") for z, x, y in everything])
    for z, x, y in everything:
        (tmp_path / "tiles" / str(z) / str(x)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "tiles" / str(z) / str(x) / f"{y}.png").write_bytes(b"png")
    # z2 metatiles are 2x2: "2/2/0" is x 2-3, y 0-1; "2/0/2+2" two of them, x 0-3, y 2-3; others are no keys
    drop = failed_ranges(["2/2/0", "2/0/2+2", "not/a/key", "9/0/0"], settings)
    failed = {(2, x, y) for x in (2, 3) for y in (0, 1)} | {(2, x, y) for x in range(4) for y in (2, 3)}
    assert remove_from_mbtiles(writer.db, wanted(settings), drop) == len(failed)
    writer.close()
    assert remove_from_folder(tmp_path / "tiles", wanted(settings), drop) == len(failed)
    assert rows(tmp_path / "t.mbtiles") == files(tmp_path / "tiles") == everything - failed


def test_a_remote_run_removes_the_tiles_an_earlier_remote_run_downloaded_and_it_did_not_make(
        tmp_path, agents, caplog):
    """On a running controller each upload is finalized in a folder of its own, and its outputs are
    downloaded beside the earlier run's: its z2 tiles stayed in tiles/ after a run at 0-1, which
    the MBTiles file and the run did not have (`farm.outputrecord`). A tile the user changed stays."""
    from farm.client import submit
    from farm.controller.server import Controller
    from farm.project import load_project

    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state").start()
    try:
        agents(ctl.url, 1)
        root = write_project(tmp_path / "p", STYLE)
        output = root / "output"
        for zoom in ("0-2", "0-1"):
            (root / "farm.toml").write_text(f'[project]\nname = "mt"\nmedia_type = "maptiles"\n\n[maptiles]\n'
                                            f'style = "style.xml"\nzoom = "{zoom}"\nbbox = {WORLD}\n')
            if zoom == "0-1":
                assert files(output / "tiles") == expected(WORLD, range(3))
                (output / "tiles" / "2" / "1" / "1.png").write_bytes(b"edited by hand")
            with caplog.at_level(logging.WARNING):
                assert submit(ctl.url, load_project(root), upload=True).ok
    finally:
        ctl.stop(shutdown_agents=True)
    assert rows(output / "mt.mbtiles") == expected(WORLD, range(2))
    assert files(output / "tiles") == expected(WORLD, range(2)) | {(2, 1, 1)}  # the edited one stays
    assert not (output / "tiles" / "2" / "0").exists()  # folders emptied go too
    (line,) = [r.getMessage() for r in caplog.records if "an earlier run made" in r.getMessage()]
    assert line.startswith("mt: removed tiles/2/"), line  # 15: five named, the rest counted
    assert line.endswith(f" and 10 more from {output}: an earlier run made them, and this run did not make "
                         "them again"), line
