"""One output file per metatile job: its tiles packed together for the trip to the controller.

64 tile files per job cost the agent 64 writes and reads, and the controller 64 staged files,
64 cache links, 64 moves and 64 reads before a tile reached the MBTiles file. One bundle per
job costs one of each; the controller unpacks it, writes each tile file once and stores the
same bytes in the MBTiles file without reading them back.

A job may group several metatiles of one zoom (adaptive chunks); their tiles share the job's
one bundle, named for its first metatile.

A bundle is msgpack: ``{"z": int, "tiles": [[x, y, png bytes], ...]}``. It comes from an agent,
so `read_bundle` checks it against the job the controller handed out before anything is
written: every wanted tile exactly once, nothing else, each a PNG.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import msgpack

from farm_maptiles.tilemath import TileRange

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class BundleError(ValueError):
    """A bundle that does not hold exactly the job's tiles as PNGs; the message says what is wrong."""


def bundle_name(z: int, x: int, y: int) -> str:
    """The output name of the bundle of the metatile whose north-west tile is (z, x, y).

    Flat, no folders: every folder in an output name is made and removed again on the agent and
    in the controller's staging and job cache (an rmdir took ~4 ms here under load).
    """
    return f"metatile-{z}-{x}-{y}.tiles"


def write_bundle(path: Path, z: int, tiles: Iterable[tuple[int, int, bytes]]) -> None:
    """Write the tiles (x, y, PNG bytes) of zoom `z` into one bundle file at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgpack.packb({"z": z, "tiles": [[x, y, data] for x, y, data in tiles]}, use_bin_type=True))


def read_bundle(path: Path, wanted: TileRange | Sequence[TileRange]) -> list[tuple[int, int, int, bytes]]:
    """The tiles (z, x, y, PNG bytes) in the bundle at `path`, which must be exactly `wanted`.

    ``wanted``: the job's tile range, or the ranges of its metatiles (one zoom, not overlapping).
    Raises BundleError naming the first problem (not msgpack, another zoom, a tile outside the
    ranges or twice, a missing tile, bytes that are not a PNG).
    """
    ranges = [wanted] if isinstance(wanted, TileRange) else list(wanted)
    z = ranges[0].z
    try:
        body = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BundleError(f"{path.name}: not a tile bundle ({type(exc).__name__})") from None
    if not isinstance(body, dict) or set(body) != {"z", "tiles"} or not isinstance(body["tiles"], list):
        raise BundleError(f"{path.name}: expected a map with 'z' and 'tiles'")
    if body["z"] != z or type(body["z"]) is not int:
        raise BundleError(f"{path.name}: holds zoom {body['z']!r}, the job is zoom {z}")

    def inside(x: int, y: int) -> bool:
        return any(r.x0 <= x <= r.x1 and r.y0 <= y <= r.y1 for r in ranges)

    found: dict[tuple[int, int], bytes] = {}
    for entry in body["tiles"]:
        if not (isinstance(entry, list) and len(entry) == 3 and type(entry[0]) is int and type(entry[1]) is int
                and isinstance(entry[2], bytes)):
            raise BundleError(f"{path.name}: a tile entry is not [x, y, bytes]")
        x, y, data = entry
        if not inside(x, y):
            raise BundleError(f"{path.name}: tile {z}/{x}/{y} is outside the job's tiles")
        if (x, y) in found:
            raise BundleError(f"{path.name}: tile {z}/{x}/{y} appears twice")
        if not data.startswith(PNG_SIGNATURE):
            raise BundleError(f"{path.name}: tile {z}/{x}/{y} is not a PNG")
        found[(x, y)] = data
    wanted_count = sum(len(r) for r in ranges)
    if len(found) != wanted_count:  # every entry is inside and distinct: fewer means some are missing
        missing = next((x, y) for r in ranges for x, y in r.tiles() if (x, y) not in found)
        raise BundleError(f"{path.name}: {wanted_count - len(found)} of the job's tiles are missing, "
                          f"first {z}/{missing[0]}/{missing[1]}")
    return [(z, x, y, data) for (x, y), data in found.items()]
