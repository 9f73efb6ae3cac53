"""The fast PNG path of the maptiles media type: same pixels as Mapnik's own encoder, comparable size.

Every tile is decoded back with Mapnik (libpng checks the CRCs and the zlib stream) and its
raw RGBA compared byte for byte with what Mapnik's ``png32`` encoder writes for the same view.
"""

from __future__ import annotations

import random
from pathlib import Path

import mapnik
import pytest
from farm_maptiles import mapstyle
from farm_maptiles.metatile import render_block, render_metatile
from farm_maptiles.pngencode import encode_png, rgba_pixels
from farm_maptiles.tilemath import TileRange
from maptiles_helpers import write_project

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


def test_render_metatile_writes_fast_png_by_default_and_mapnik_png8_on_request(tmp_path: Path) -> None:
    m = load(SAMPLE / "world.xml", SAMPLE)
    solid: dict = {}
    for fmt in ("png", "png8"):
        out = tmp_path / fmt
        names = render_metatile(m, 3, 0, 0, 8, TileRange(3, 0, 0, 7, 7), 256, fmt, out, solid)
        assert len(names) == 64
        image = render_block(m, 3, 0, 0, 8, 256)
        for name in names:
            z, tx, ty = (int(v) for v in name[len("tiles/"):-len(".png")].split("/"))
            view = image.view(tx * 256, ty * 256, 256, 256)
            data = (out / name).read_bytes()
            if fmt == "png":  # the solid-colour cache hands out the same bytes as encoding again
                assert decoded(data) == decoded(view.to_string("png32")), name
            else:
                assert data == view.to_string("png8"), name
