"""The maptiles live preview: a slippy map of the tiles collated so far (see `farm.preview`)."""

from __future__ import annotations

from typing import Any

from farm.preview import PreviewContext

TILE_PATH = "tiles/{z}/{x}/{y}.png"  # where `farm_maptiles.metatile.tile_name` puts each tile


def describe(ctx: PreviewContext, mbtiles: str) -> dict[str, Any]:
    """The ``tiles`` description: tile files under ``tiles/`` as `collate` writes them, the
    MBTiles file ``mbtiles`` (a name in the output folder) for tiles whose files are gone."""
    s = ctx.settings
    preview: dict[str, Any] = {
        "kind": "tiles",
        "path": TILE_PATH,
        "mbtiles": mbtiles,
        "bounds": list(s["bbox"]),
        "minzoom": s["minzoom"],
        "maxzoom": s["maxzoom"],
        "tile_size": s["tile_size"],
    }
    if s.get("attribution"):
        preview["attribution"] = s["attribution"]
    return preview
