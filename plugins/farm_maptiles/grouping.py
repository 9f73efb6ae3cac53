"""Jobs of several metatiles: the ``maptiles`` split, sized by the controller's chunk advisor.

A z6 metatile renders in 30-60 ms, so one job per metatile spends a large share of the run on
hand-overs. A job groups consecutive metatiles of one metatile row (adaptive chunks,
`farm.controller.chunking`): the advisor sizes it from the measured time per metatile, aiming at
``[jobs] target`` and shrinking near the end; ``[maptiles] chunk`` fixes the count instead.

Keys and reuse. A job of one metatile is keyed ``z/x/y`` with the params it always had; a
group of ``n`` is ``z/x/y+n`` (its first metatile), its params listing each metatile's tiles.
A group never crosses a row, so each row starts its jobs at its first metatile whatever the
zoom range, and its sizes are ladder sizes, the row's end or the job cap: a re-submit or a
resume walks the same rows and finds the jobs done before at whatever sizes made them (one
metatile per job included). Moving the bbox's west edge by a metatile column shifts every row,
so groups made before are not found then (their metatiles render again).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from farm.mediatype import ChunkAdvisor, Job
from farm_maptiles.config import MAX_JOB_TILES
from farm_maptiles.tilemath import Metatile, TileRange, metatile_grid, metatile_size, metatiles



def job_limit(metatile: int, z: int) -> int:
    """Metatiles one adaptive job may group at zoom ``z`` (at least 1)."""
    return max(1, MAX_JOB_TILES // metatile_size(metatile, z) ** 2)


def make_job(metas: list[Metatile], inputs: tuple[str, ...] | None = None) -> Job:
    """The job of consecutive metatiles ``metas`` (one zoom) reading the project files ``inputs``
    (None: all); units: how many."""
    first = metas[0]
    w = first.wanted
    if len(metas) == 1:
        params: dict[str, Any] = {"z": first.z, "x": first.x, "y": first.y, "size": first.size,
                                  "tiles": [w.x0, w.y0, w.x1, w.y1]}
        return Job(first.key, params, inputs)
    params = {"z": first.z, "size": first.size,
              "metatiles": [[m.x, m.y, m.wanted.x0, m.wanted.y0, m.wanted.x1, m.wanted.y1] for m in metas]}
    return Job(f"{first.key}+{len(metas)}", params, inputs, units=len(metas))


def job_metatiles(params: Mapping[str, Any]) -> list[tuple[int, int, TileRange]]:
    """Each metatile of a job: (x, y of its north-west tile, its wanted tiles)."""
    z = params["z"]
    if "metatiles" in params:
        return [(x, y, TileRange(z, x0, y0, x1, y1)) for x, y, x0, y0, x1, y1 in params["metatiles"]]
    return [(params["x"], params["y"], TileRange(z, *params["tiles"]))]


def job_count(settings: Mapping[str, Any]) -> int:
    """Jobs at the fixed chunk (``chunk`` metatiles, a row's end cutting a job short)."""
    return jobs_from(settings, settings["minzoom"], 0, settings["chunk"], fixed=True)


def jobs_from(settings: Mapping[str, Any], z: int, rows_done: int, size: int, *, fixed: bool) -> int:
    """Jobs of ``size`` metatiles (capped by each zoom's `job_limit` unless ``fixed``) in the
    rows of zoom ``z`` after its first ``rows_done`` and in every zoom after it."""
    total = 0
    for zoom in range(z, settings["maxzoom"] + 1):
        columns, rows = metatile_grid(settings["bbox"], zoom, settings["metatile"])
        n = max(1, size if fixed else min(size, job_limit(settings["metatile"], zoom)))
        total += (rows - (rows_done if zoom == z else 0)) * -(-columns // n)
    return total


def metatile_total(settings: Mapping[str, Any]) -> int:
    total = 0
    for z in range(settings["minzoom"], settings["maxzoom"] + 1):
        columns, rows = metatile_grid(settings["bbox"], z, settings["metatile"])
        total += columns * rows
    return total


def split_jobs(settings: Mapping[str, Any], chunks: ChunkAdvisor | None) -> Iterator[Job]:
    """The jobs, zoom by zoom, row by row; sizes from ``chunks`` unless the project wrote a
    ``chunk`` (new jobs take it; jobs done before at other sizes are still found). Without an
    advisor: ``chunk`` metatiles per job, 1 by default."""
    fixed = chunks is None or settings.get("chunk_fixed", True)
    chunk = settings.get("chunk", 1)
    # every job reads the whole style (`MapTiles.configure`); a project read before it was found: all
    inputs = None if settings.get("inputs") is None else tuple(settings["inputs"])
    left = metatile_total(settings)
    for z in range(settings["minzoom"], settings["maxzoom"] + 1):
        limit = job_limit(settings["metatile"], z)
        zoom = metatiles(settings["bbox"], z, settings["metatile"])
        for row_number, (_, group) in enumerate(itertools.groupby(zoom, lambda m: m.y)):
            row = list(group)
            i = 0
            while i < len(row):
                def make(n: int, start: int = i, row: list[Metatile] = row) -> Job:
                    return make_job(row[start:start + n], inputs)

                if chunks is None:
                    job = make(min(chunk, len(row) - i))
                else:  # a fixed chunk too: the advisor finds jobs done at other sizes, counts the rest
                    cap = len(row) - i if fixed else min(limit, len(row) - i)

                    def rest(units: int, n: int, start: int = i, row: list[Metatile] = row, z: int = z,
                             below: int = row_number + 1, limit: int = limit) -> int:
                        """Jobs after this one at ``n`` metatiles: this row's end, then whole rows."""
                        per = max(1, n if fixed else min(n, limit))
                        row_rest = -(-(len(row) - start - units) // per)
                        return row_rest + jobs_from(settings, z, below, n, fixed=fixed)

                    job = chunks.next_job(left, chunk, make, cap, fixed=fixed, rest=rest)
                yield job
                i += job.units
                left -= job.units
