"""The fast tile path: PNGs with the same pixels as Mapnik's own encoder at a comparable size, and the
one bundle of tiles a job returns (checked by the controller).

Every tile is decoded back with Mapnik (libpng checks the CRCs and the zlib stream) and its
raw RGBA compared byte for byte with what Mapnik's ``png32`` encoder writes for the same view.
"""

from __future__ import annotations

import array
import fcntl
import os
import random
import re
import shutil
from pathlib import Path

import mapnik
import msgpack
import pytest
from farm_maptiles import mapstyle
from farm_maptiles.bundle import BundleError, read_bundle, write_bundle
from farm_maptiles.metatile import render_block, render_metatile
from farm_maptiles.pngencode import encode_png, rgba_pixels, scanlines, solid_colour
from farm_maptiles.tilemath import TileRange
from maptiles_helpers import write_project

from farm.errors import RenderError
from farm.filesync.placement import spread_subfolders
from farm.mediatype import CollateContext, RenderContext
from farm.plugins import get_media_type
from farm.project import load_project

SAMPLE = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"


def decoded(png: bytes) -> bytes:
    """Raw RGBA of a PNG, decoded by Mapnik (libpng): raises on a corrupt file."""
    return mapnik.Image.from_buffer(png).to_string()


def load(style: Path, root: Path, tile_size: int = 256):
    mapstyle.register_fonts()
    return mapstyle.load_map(mapstyle.read_style(style, root), tile_size, 128)


def assert_same_as_mapnik(image: mapnik.Image, tile_size: int, tiles: list[tuple[int, int]]) -> tuple[int, int]:
    """Each tile's decoded pixels equal Mapnik's png32 of the same view; returns (our bytes, Mapnik's)."""
    pixels = rgba_pixels(image)
    ours = theirs = 0
    for left, top in tiles:
        fast = encode_png(pixels, image.width() * 4, left, top, tile_size, tile_size)
        reference = image.view(left, top, tile_size, tile_size).to_string("png32")
        assert decoded(fast) == decoded(reference), f"tile at ({left}, {top}) differs from Mapnik's encoder"
        ours += len(fast)
        theirs += len(reference)
    return ours, theirs


@pytest.mark.parametrize("z, x, y, size", [(2, 0, 0, 4), (5, 8, 8, 8), (6, 32, 16, 8)])
def test_world_map_tiles_match_mapnik_pixels_at_a_comparable_size(z: int, x: int, y: int, size: int) -> None:
    m = load(SAMPLE / "world.xml", SAMPLE)
    image = render_block(m, z, x, y, size, 256)
    tiles = [(i * 256, j * 256) for i in range(size) for j in range(size)]
    ours, theirs = assert_same_as_mapnik(image, 256, tiles)
    assert ours <= theirs * 1.10, f"fast PNGs take {ours} bytes against Mapnik's {theirs}"


def test_translucent_pixels_keep_straight_alpha(tmp_path: Path) -> None:
    """No background and half-transparent fills: alpha must come out as Mapnik writes it."""
    style = """
        <Map srs="epsg:3857">
          <Style name="s"><Rule>
            <PolygonSymbolizer fill="#3366cc" fill-opacity="0.37"/>
            <LineSymbolizer stroke="#cc3300" stroke-width="3" stroke-opacity="0.6"/>
          </Rule></Style>
          <Layer name="l" srs="epsg:4326"><StyleName>s</StyleName>
            <Datasource><Parameter name="type">csv</Parameter><Parameter name="inline">
wkt
"POLYGON((-170 -60,170 -60,0 70,-170 -60))"
"POLYGON((-120 -10,100 -40,30 60,-120 -10))"
</Parameter></Datasource></Layer>
        </Map>"""
    folder = write_project(tmp_path / "p", style)
    for tile_size in (256, 100, 512):  # a size that is no power of two; a large one
        m = load(folder / "style.xml", folder, tile_size)
        image = render_block(m, 1, 0, 0, 2, tile_size)
        alphas = {image.get_pixel(i, j) >> 24 for i in range(0, 2 * tile_size, 7) for j in range(0, 2 * tile_size, 7)}
        assert len(alphas - {0, 255}) > 0, "the style should leave translucent pixels"
        assert_same_as_mapnik(image, tile_size, [(0, 0), (tile_size, 0), (0, tile_size), (tile_size, tile_size)])


def test_every_byte_value_and_a_premultiplied_image_round_trip() -> None:
    rng = random.Random(7)
    image = mapnik.Image(48, 40)
    for i in range(48):
        for j in range(40):
            image.set_pixel(i, j, mapnik.Color(rng.randrange(256), rng.randrange(256), rng.randrange(256),
                                               rng.randrange(256)))
    expected = decoded(image.view(5, 3, 31, 29).to_string("png32"))
    image.premultiply()
    assert image.premultiplied()
    fast = encode_png(rgba_pixels(image), 48 * 4, 5, 3, 31, 29)  # demultiplied again, as Mapnik's encoder does
    # premultiplying and back rounds translucent pixels; opaque ones must survive exactly
    got = decoded(fast)
    assert len(got) == len(expected) == 31 * 29 * 4
    opaque = [k for k in range(0, len(expected), 4) if expected[k + 3] == 255]
    assert all(got[k:k + 4] == expected[k:k + 4] for k in opaque)
    assert decoded(fast) == decoded(image.view(5, 3, 31, 29).to_string("png32"))


@pytest.mark.parametrize("left, top, width, height", [(-1, 0, 8, 8), (0, 0, 9, 8), (0, 1, 8, 8), (0, 0, 0, 8)])
def test_a_block_outside_the_buffer_is_refused(left: int, top: int, width: int, height: int) -> None:
    pixels = bytes(8 * 8 * 4)
    with pytest.raises(ValueError, match="block"):
        encode_png(pixels, 8 * 4, left, top, width, height)


def test_render_metatile_encodes_fast_png_by_default_and_mapnik_png8_on_request() -> None:
    m = load(SAMPLE / "world.xml", SAMPLE)
    solid: dict = {}
    for fmt in ("png", "png8"):
        tiles = render_metatile(m, 3, 0, 0, 8, TileRange(3, 0, 0, 7, 7), 256, fmt, solid)
        assert sorted((x, y) for x, y, _ in tiles) == [(x, y) for x in range(8) for y in range(8)]
        image = render_block(m, 3, 0, 0, 8, 256)
        for tx, ty, data in tiles:
            view = image.view(tx * 256, ty * 256, 256, 256)
            if fmt == "png":  # the solid-colour cache hands out the same bytes as encoding again
                assert decoded(data) == decoded(view.to_string("png32")), (tx, ty)
            else:
                assert data == view.to_string("png8"), (tx, ty)


# -- the bundle a job returns: checked on the controller before anything is written -----------------

PNG = b"\x89PNG\r\n\x1a\n" + b"rest"
WANTED = TileRange(4, 2, 6, 3, 7)  # 2 x 2 tiles


def bundle_bytes(tmp_path: Path, body) -> Path:
    path = tmp_path / "b.tiles"
    path.write_bytes(msgpack.packb(body, use_bin_type=True))
    return path


def test_a_bundle_round_trips_exactly_the_wanted_tiles(tmp_path: Path) -> None:
    tiles = [(x, y, PNG + bytes([x, y])) for x, y in WANTED.tiles()]
    write_bundle(tmp_path / "m/b.tiles", 4, tiles)
    got = read_bundle(tmp_path / "m/b.tiles", WANTED)
    assert sorted(got) == sorted((4, x, y, data) for x, y, data in tiles)


@pytest.mark.parametrize("body, words", [
    ({"z": 4, "tiles": [[2, 6, PNG], [2, 7, PNG], [3, 6, PNG]]}, "1 of the job's tiles are missing, first 4/3/7"),
    ({"z": 4, "tiles": [[2, 6, PNG], [2, 7, PNG], [3, 6, PNG], [3, 7, PNG], [4, 7, PNG]]}, "4/4/7 is outside"),
    ({"z": 4, "tiles": [[2, 6, PNG], [2, 6, PNG]]}, "4/2/6 appears twice"),
    ({"z": 5, "tiles": []}, "holds zoom 5, the job is zoom 4"),
    ({"z": True, "tiles": []}, "holds zoom True"),
    ({"z": 4, "tiles": [[2, 6, b"GIF89a"]]}, "4/2/6 is not a PNG"),
    ({"z": 4, "tiles": [[2, 6, "text"]]}, "not [x, y, bytes]"),
    ({"z": 4, "tiles": [[2.0, 6, PNG]]}, "not [x, y, bytes]"),
    ({"z": 4}, "expected a map with 'z' and 'tiles'"),
    ([4, []], "expected a map"),
    ({"z": 4, "tiles": [], "extra": 1}, "expected a map"),
])
def test_a_bad_bundle_is_refused_naming_the_problem(tmp_path: Path, body, words: str) -> None:
    with pytest.raises(BundleError, match=re.escape(words)):
        read_bundle(bundle_bytes(tmp_path, body), WANTED)


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x92\x01", b"\x91" * 5000, msgpack.packb({}) + b"x"])
def test_bytes_that_are_not_a_bundle_are_refused(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "b.tiles"
    path.write_bytes(raw)
    with pytest.raises(BundleError):
        read_bundle(path, WANTED)


def rendered_job(tmp_path: Path):
    """The one job of world_map at zoom 1, rendered: (media type, project, job, its bundle file)."""
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(SAMPLE / "world.xml", folder / "world.xml")
    shutil.copytree(SAMPLE / "data", folder / "data")
    (folder / "farm.toml").write_text('[project]\nname = "w"\nmedia_type = "maptiles"\n\n'
                                      '[maptiles]\nstyle = "world.xml"\nzoom = "1"\n')
    project = load_project(folder)
    media = get_media_type("maptiles")
    (job,) = media.split(project)
    out = tmp_path / "out"
    out.mkdir()
    ctx = RenderContext(project_dir=project.root, output_dir=out, work_dir=tmp_path, settings=project.settings,
                        threads=1, cache={}, deps={})
    media.render(job, ctx)
    (bundle,) = out.rglob("*.tiles")
    assert bundle.relative_to(out).as_posix() == "metatile-1-0-0.tiles"
    return media, project, job, bundle


def test_a_bad_bundle_fails_the_job_and_writes_nothing(tmp_path: Path) -> None:
    """Collate refuses a tampered bundle (a tile moved outside the job) before writing any tile."""
    media, project, job, bundle = rendered_job(tmp_path)
    body = msgpack.unpackb(bundle.read_bytes())
    body["tiles"][-1][1] += 2  # 1/x/3: no such tile at zoom 1
    bundle.write_bytes(msgpack.packb(body))
    collate = CollateContext(project, project.output_dir, {})
    with pytest.raises(RenderError, match=r"maptiles job 1/0/0: .*tile 1/1/3 is outside the job's tiles"):
        media.collate(job, None, {"metatile-1-0-0.tiles": bundle}, collate)
    assert not (project.output_dir / "tiles").exists()
    with pytest.raises(RenderError, match="returned no metatile-1-0-0.tiles"):
        media.collate(job, None, {"metatile-1-0-1.tiles": bundle}, collate)


def test_collate_writes_the_bundle_s_tiles_in_a_spread_tiles_folder(tmp_path: Path) -> None:
    media, project, job, bundle = rendered_job(tmp_path)
    collate = CollateContext(project, project.output_dir, {})
    media.collate(job, None, {"metatile-1-0-0.tiles": bundle}, collate)
    media.finalize(collate)
    tiles = project.output_dir / "tiles"
    assert sorted(p.relative_to(tiles).as_posix() for p in tiles.rglob("*.png")) == [
        "1/0/0.png", "1/0/1.png", "1/1/0.png", "1/1/1.png"]
    probe = tmp_path / "probe"
    probe.mkdir()
    if spread_subfolders(probe):  # ext2/3/4 and allowed: the tiles folder carries the hint too
        flags = array.array("i", [0])
        fd = os.open(tiles, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, 0x80086601, flags, True)  # FS_IOC_GETFLAGS
        finally:
            os.close(fd)
        assert flags[0] & 0x00020000  # FS_TOPDIR_FL


def test_solid_tiles_are_found_as_mapnik_finds_them() -> None:
    m = load(SAMPLE / "world.xml", SAMPLE)
    image = render_block(m, 6, 0, 56, 8, 256)  # the south-west Pacific: sea, coast, Antarctica
    pixels = rgba_pixels(image)
    verdicts = []
    for i in range(8):
        for j in range(8):
            lines = scanlines(pixels, 8 * 256 * 4, i * 256, j * 256, 256, 256)
            colour = solid_colour(lines, 256, 256)
            assert (colour is not None) == image.view(i * 256, j * 256, 256, 256).is_solid()
            verdicts.append(colour is not None)
            if colour is not None:
                assert colour == pixels[(j * 256 * 2048 + i * 256) * 4:][:4]
    assert 0 < sum(verdicts) < 64
    # one pixel off, first or last, is not solid
    flat = mapnik.Image(16, 16)
    flat.fill(mapnik.Color(10, 20, 30, 255))
    for x, y in ((0, 0), (15, 15), (7, 3)):
        spotted = flat.copy(mapnik.ImageType.rgba8)
        spotted.set_pixel(x, y, mapnik.Color(10, 20, 31, 255))
        assert solid_colour(scanlines(rgba_pixels(spotted), 64, 0, 0, 16, 16), 16, 16) is None
    assert solid_colour(scanlines(rgba_pixels(flat), 64, 0, 0, 16, 16), 16, 16) == bytes([10, 20, 30, 255])
