"""Helpers for the maptiles tests: case folders, a font of our own, a secret outside the project."""

from __future__ import annotations

import math
import shutil
import struct
import textwrap
from pathlib import Path

import mapnik

CASES = Path(__file__).resolve().parent / "cases"
TILE = 256
HALF_WORLD = math.pi * 6378137.0
#: the face the renamed font is registered under (its family renamed, its style kept)
SHIPPED_FACE = "FarmTT Sans Mono Oblique"


def copy_case(name: str, dest: Path) -> Path:
    """A writable copy of ``tests/cases/<name>``."""
    shutil.copytree(CASES / name, dest)
    for path in (dest, *dest.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def csv_source(file: str, extra: str = "", tag: str = "<Datasource>") -> str:
    """A CSV ``<Datasource>`` reading ``file``, with ``extra`` parameters."""
    params = f'<Parameter name="type">csv</Parameter><Parameter name="file">{file}</Parameter>{extra}'
    return f"{tag}{params}</Datasource>"


def style_xml(rule: str, datasource: str = "", head: str = "", map_attrs: str = "") -> str:
    """A style of one layer ``places`` drawn by style ``labels``, whose one rule holds ``rule``.

    ``head`` goes before the style (fontsets, datasource templates); the Map element is line 2.
    The datasource is ``places.csv`` beside the style unless given.
    """
    datasource = datasource or csv_source("places.csv")
    return f"""
        <?xml version="1.0" encoding="utf-8"?>
        <Map srs="epsg:3857" background-color="#ffffff"{map_attrs}>
          {head}
          <Style name="labels"><Rule>{rule}</Rule></Style>
          <Layer name="places" srs="epsg:4326">
            <StyleName>labels</StyleName>
            {datasource}
          </Layer>
        </Map>"""


def write_project(folder: Path, style: str, files: dict[str, str] | None = None,
                  table: str = 'style = "style.xml"\nzoom = "0-1"', name: str = "mt") -> Path:
    """A maptiles project: ``farm.toml``, the style (at ``table``'s ``style`` path) and small text files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "farm.toml").write_text(
        f'[project]\nname = "{name}"\nmedia_type = "maptiles"\n\n[maptiles]\n{textwrap.dedent(table)}\n')
    style_path = table.split('style = "', 1)[1].split('"', 1)[0]
    for rel, text in {style_path: textwrap.dedent(style).strip() + "\n", **(files or {})}.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def write_renamed_font(dest: Path) -> Path:
    """A copy of Mapnik's bundled DejaVu Sans Mono Oblique whose family reads "FarmTT Sans Mono".

    No face of that name is installed anywhere, so a style can only use it through its
    font-directory. The name table's strings are rewritten in place (same length), in the
    Macintosh (one byte) and Windows (UTF-16BE) records alike.
    """
    source = Path(mapnik.paths.fontscollectionpath) / "DejaVuSansMono-Oblique.ttf"
    data = bytearray(source.read_bytes())
    tables = struct.unpack(">H", data[4:6])[0]
    for i in range(tables):
        tag, _, offset, length = struct.unpack(">4sIII", data[12 + 16 * i: 28 + 16 * i])
        if tag == b"name":
            block = bytes(data[offset: offset + length])
            block = block.replace(b"DejaVu", b"FarmTT")
            block = block.replace("DejaVu".encode("utf-16-be"), "FarmTT".encode("utf-16-be"))
            data[offset: offset + length] = block
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(data))
    return dest


def mosaic(output: Path, z: int) -> mapnik.Image:
    """The project's tiles at zoom ``z`` put back together into one image."""
    n = 1 << z
    image = mapnik.Image(n * TILE, n * TILE)
    for x in range(n):
        for y in range(n):
            tile = mapnik.Image.open(str(output / f"tiles/{z}/{x}/{y}.png"))
            image.composite(tile, mapnik.CompositeOp.src_over, 1.0, x * TILE, y * TILE)
    return image


def seamless(style: Path, z: int) -> mapnik.Image:
    """The whole world at zoom ``z`` in one render: no metatile edges, so no seams (the case's check.py)."""
    n = 1 << z
    m = mapnik.Map(n * TILE, n * TILE)
    mapnik.load_map(m, str(style))
    m.srs = "epsg:3857"
    m.buffer_size = 128
    m.zoom_to_box(mapnik.Box2d(-HALF_WORLD, -HALF_WORLD, HALF_WORLD, HALF_WORLD))
    image = mapnik.Image(n * TILE, n * TILE)
    mapnik.render(m, image)
    return image
