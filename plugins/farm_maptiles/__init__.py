"""The built-in ``maptiles`` media type: Mapnik styles rendered to XYZ tiles and MBTiles.

Modules: `tilemath` (Web Mercator tile and metatile arithmetic), `config` (the
``[maptiles]`` table), `mapstyle` (checking a style and loading it into a Map), with
`stylexml` (the style read with line numbers), `references` (the files and datasources
it reads, confined to the project), `fonts` (its faces must exist) and `labels` (the buffer
its labels need); `metatile` (render once, cut into tiles), `pngencode` (the PNG encoder of
`png` tiles), `bundle` (one file of tiles per job, checked on the controller), `mbtiles` (the
MBTiles writer), `leftovers` (an earlier run's tiles this run did not make, removed at
finalize), `grouping` (metatiles per job: the split, sized by the controller's adaptive
chunks), `mediatype` (the MediaType). Users' view: docs/media-maptiles.md.
"""

from __future__ import annotations

from collections.abc import Callable

from farm.hookspecs import hookimpl
from farm.mediatype import MediaType
from farm_maptiles.mediatype import MapTiles

# 1.1: a job returns one bundle of tiles (cached outputs of 1.0 do not fit); 1.2: a job may group
# several metatiles of a row (an agent of 1.1 could not read its params)
__version__ = "1.2.0"
__all__ = ["MapTiles"]


@hookimpl
def farm_register_media_types(register: Callable[[type[MediaType]], None]) -> None:
    register(MapTiles)
