"""The ``maptiles`` media type: a Mapnik style rendered to XYZ PNG tiles and one MBTiles file.

Each job is one aligned metatile (key ``"z/x/y"`` of its north-west tile) or several
consecutive ones of a row (``"z/x/y+n"``, sized by the controller's adaptive chunks or a fixed
``chunk``: `grouping`); the agent renders each metatile once, cuts the tiles inside the
project's bbox and returns the job's tiles in one bundle file (`bundle`); the controller writes
each tile to ``<output>/tiles/{z}/{x}/{y}.png`` and stores the same bytes in
``<output>/<project name>.mbtiles`` as each job comes back.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from farm.errors import RenderError
from farm.filesync.placement import spread_subfolders
from farm.mediatype import ChunkAdvisor, CollateContext, Job, MediaType, RenderContext
from farm.outputgone import OutputRemoved
from farm.paths import UnsafePath, resolve_inside
from farm.preview import PreviewContext
from farm.project import Project
from farm.settings import SettingsReader
from farm_maptiles import config, grouping, leftovers, mapnikerror, mapstyle, preview
from farm_maptiles.bundle import BundleError, bundle_name, read_bundle, write_bundle
from farm_maptiles.mbtiles import MBTilesWriter
from farm_maptiles.metatile import render_metatile, tile_name
from farm_maptiles.tilemath import tile_range

log = logging.getLogger(__name__)

_CACHE_KEY = "farm_maptiles.map"
_STATE_KEY = "mbtiles"
_FOLDERS_KEY = "tile folders"  # tile folders made by this run (one mkdir each, not one per tile)


def mapnik_missing() -> str | None:
    """None when Mapnik imports, else why not."""
    try:
        import mapnik  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library (OSError)
        return f"Python package 'mapnik' does not import ({type(exc).__name__}: {exc}); pip install mapnik"
    return None


def _signature(paths: list[Path]) -> list[tuple[str, int, int]]:
    """Path, mtime and size of each file (a vanished file counts as changed)."""
    found = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            found.append((str(path), -1, -1))
        else:
            found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return found


def mbtiles_name(project_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", project_name).strip("._") or "tiles"
    return f"{safe}.mbtiles"


def mbtiles_path(ctx: CollateContext) -> Path:
    return ctx.output_dir / mbtiles_name(ctx.project.name)


class MapTiles(MediaType):
    name = "maptiles"
    description = "Map tiles rendered with Mapnik: XYZ PNG tiles and an MBTiles file"
    # No extra tags: an agent advertises "maptiles" only where `available()` found Mapnik.
    requirements = ()
    default_timeout = 600.0
    unit = "tiles"
    adaptive_chunks = True

    def available(self) -> str | None:
        return mapnik_missing()

    def configure(self, settings: SettingsReader) -> dict[str, Any]:
        values = config.read_settings(settings)
        style = settings.root / values["style"]
        if not settings.renderer_checks:  # a controller: Mapnik's checks ran where it was submitted
            values["buffer"] = config.submitted_buffer(settings, values["buffer"])
        try:
            if settings.renderer_checks and mapnik_missing() is None:
                values["buffer"], checked = mapstyle.check_style(style, settings.root, values["buffer"],
                                                                 settings.asset_rules())
            else:  # the files it reads, found here without Mapnik (never taken from a submitter)
                checked = mapstyle.read_style(style, settings.root, settings.asset_rules(), faces=False)
        except mapstyle.StyleError as exc:
            raise settings.error("style", f"cannot use style {values['style']!r}: {exc}") from None
        # each job's inputs (`split`): a file no job reads does not enter its cache key; None: all
        values["inputs"] = checked.inputs()
        return values

    def renderer_facts(self, settings: Mapping[str, Any]) -> Mapping[str, Any]:
        # the metatile buffer Mapnik derived from the style's labels (None: nobody derived one)
        return {} if settings["buffer"] is None else {"buffer": settings["buffer"]}

    def cache_settings(self, settings: Mapping[str, Any]) -> Mapping[str, Any]:
        # zoom and bbox only choose which metatiles exist (the params carry the tiles to cut);
        # the metadata keys only reach the MBTiles header: widening a zoom range reuses the rest
        return {k: settings[k] for k in ("style", "tile_size", "metatile", "format", "buffer")}

    def count(self, project: Project) -> int:
        """Jobs at the fixed chunk (adaptive chunks: the controller updates it as sizes change)."""
        return grouping.job_count(project.settings)

    def units(self, job: Job, project: Project) -> float:
        # the tiles inside the bbox of the job's metatiles
        return sum(len(wanted) for _, _, wanted in grouping.job_metatiles(job.params))

    def total_units(self, project: Project) -> float:
        s = project.settings
        return sum(len(tile_range(s["bbox"], z)) for z in range(s["minzoom"], s["maxzoom"] + 1))

    def split(self, project: Project, chunks: ChunkAdvisor | None = None) -> Iterator[Job]:
        """Zoom by zoom, row by row: one metatile per job, or several of a row (`grouping`)."""
        return grouping.split_jobs(project.settings, chunks)

    def render(self, job: Job, ctx: RenderContext) -> Mapping[str, Any] | None:
        s = ctx.settings
        p = job.params
        m, solid = self._map(ctx)
        z = p["z"]
        metas = grouping.job_metatiles(p)
        tiles: list[tuple[int, int, bytes]] = []
        for i, (x, y, wanted) in enumerate(metas):
            try:
                tiles += render_metatile(m, z, x, y, p["size"], wanted, s["tile_size"], s["format"], solid)
            except RuntimeError as exc:  # Mapnik raises RuntimeError for render-time failures
                # its first line, paths outside the project redacted: what follows can quote a data file
                reason = mapnikerror.reason(str(exc), ctx.project_dir) or type(exc).__name__
                raise RenderError(f"Mapnik failed to render metatile {z}/{x}/{y}: {reason}") from None
            if len(metas) > 1:
                ctx.progress((i + 1) / len(metas))
        x, y, _ = metas[0]
        write_bundle(ctx.output_dir / bundle_name(z, x, y), z, tiles)
        return {"tiles": len(tiles)}

    def _map(self, ctx: RenderContext) -> tuple[Any, dict]:
        """The worker's one `mapnik.Map` of the style, loaded on first use and again when the style
        or a file it reads changed (Mapnik reads a CSV or GeoJSON file once, at load)."""
        try:
            style = resolve_inside(ctx.project_dir, ctx.settings["style"])
        except UnsafePath as exc:
            raise RenderError(f"[maptiles] style: {exc}") from None
        buffer = ctx.settings.get("buffer")
        if buffer is not None and (type(buffer) is not int or not 0 <= buffer <= config.MAX_BUFFER):
            raise RenderError(f"[maptiles] buffer: expected pixels 0..{config.MAX_BUFFER}, got {buffer!r}")
        cached = ctx.cache.get(_CACHE_KEY)
        if cached is None or cached[0] != _signature([style, *cached[3]]):
            missing = mapnik_missing()
            if missing:
                raise RenderError(missing)
            mapstyle.register_fonts()
            try:  # the controller's checks again, on this agent's copy: its fonts, its files
                checked = mapstyle.read_style(style, ctx.project_dir)
                m = mapstyle.load_map(checked, ctx.settings["tile_size"], buffer)
            except mapstyle.StyleError as exc:
                raise RenderError(f"cannot use style {ctx.settings['style']!r} here: {exc}") from None
            log.debug("loaded style %s (buffer %d px)", style, m.buffer_size)
            cached = ctx.cache[_CACHE_KEY] = (_signature([style, *checked.files]), m, {}, checked.files)
        return cached[1], cached[2]

    def _writer(self, ctx: CollateContext) -> MBTilesWriter:
        writer = ctx.state.get(_STATE_KEY)
        if writer is None:
            writer = ctx.state[_STATE_KEY] = MBTilesWriter(mbtiles_path(ctx))
        return writer

    def collate(
        self, job: Job, result: Mapping[str, Any] | None, outputs: Mapping[str, Path], ctx: CollateContext
    ) -> None:
        p = job.params
        metas = grouping.job_metatiles(p)
        name = bundle_name(p["z"], metas[0][0], metas[0][1])
        for other in outputs.keys() - {name}:
            ctx.log.warning("maptiles job %s returned an unexpected file %r; ignored", job.key, other)
        if name not in outputs:
            raise RenderError(f"maptiles job {job.key} returned no {name}")
        try:
            tiles = read_bundle(outputs[name], [wanted for _, _, wanted in metas])
        except BundleError as exc:
            raise RenderError(f"maptiles job {job.key}: {exc}") from None
        folders = ctx.state.get(_FOLDERS_KEY)
        if folders is None:
            folders = ctx.state[_FOLDERS_KEY] = set()
            tiles_root = ctx.output_dir / "tiles"
            tiles_root.mkdir(parents=True, exist_ok=True)
            # thousands of new files: on ext4 under a busy folder each could cost ~0.2 ms of inode
            # search; spread the zoom folders over uncrowded block groups (measured: 3.2-4.5 s of
            # system time for 5,461 tiles after deletions nearby, 0.15 s with the hint)
            spread_subfolders(tiles_root)
        writer = self._writer(ctx)
        for z, x, y, data in tiles:
            path = ctx.output_dir / tile_name(z, x, y)
            if path.parent not in folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                folders.add(path.parent)
            try:
                _write_tile(path, data)
            except FileNotFoundError as exc:  # its folder, made before, is gone: say the output folder went
                gone = OutputRemoved.check(path, ctx.output_dir, writer.folder, exc.strerror)
                if gone is None:
                    raise
                raise gone from exc
        writer.add_tiles(tiles)

    def preview(self, ctx: PreviewContext) -> Mapping[str, Any]:
        return preview.describe(ctx, mbtiles_name(ctx.project))

    def finalize(self, ctx: CollateContext) -> list[Path]:
        s = ctx.project.settings
        writer = self._writer(ctx)
        west, south, east, north = s["bbox"]
        metadata = {
            "name": ctx.project.name,
            "format": "png",
            "bounds": f"{west:.6f},{south:.6f},{east:.6f},{north:.6f}",
            "center": f"{(west + east) / 2:.6f},{(south + north) / 2:.6f},{s['minzoom']}",
            "minzoom": str(s["minzoom"]),
            "maxzoom": str(s["maxzoom"]),
            "type": "baselayer",
            "version": "1",
        }
        if s["attribution"]:
            metadata["attribution"] = s["attribution"]
        if s["description"]:
            metadata["description"] = s["description"]
        _remove_leftovers(ctx, writer)
        writer.set_metadata(metadata)
        self.release(ctx)
        outputs = [writer.path]
        tiles = ctx.output_dir / "tiles"
        if tiles.is_dir():
            outputs.append(tiles)
        return outputs


    def release(self, ctx: CollateContext) -> None:
        """Close the run's MBTiles writer, whatever ended the run: a cancelled or failed run's
        open file would keep its WAL beside it, and a download of the file alone lacks its tiles."""
        ctx.state.pop(_FOLDERS_KEY, None)
        writer = ctx.state.pop(_STATE_KEY, None)
        if writer is not None:
            writer.close()


def _remove_leftovers(ctx: CollateContext, writer: MBTilesWriter) -> None:
    """An earlier run's tiles that this run did not make leave both outputs (`farm_maptiles.leftovers`)."""
    s = ctx.project.settings
    keep, drop = leftovers.wanted(s), leftovers.failed_ranges(ctx.failed, s)
    with writer.lock, writer.named():
        in_file = leftovers.remove_from_mbtiles(writer.db, keep, drop)
    in_folder = leftovers.remove_from_folder(ctx.output_dir / "tiles", keep, drop)
    if in_file or in_folder:
        failed = f" or of the {len(ctx.failed)} jobs that failed" if drop else ""
        ctx.log.warning("%s: removed %d tiles from %s and %d from tiles/ that an earlier run left and this "
                        "run did not make (outside zoom %d-%d and this bbox%s)", ctx.project.name, in_file,
                        writer.path.name, in_folder, s["minzoom"], s["maxzoom"], failed)


_TILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_tile(path: Path, data: bytes) -> None:
    """`Path.write_bytes`, but a link where the tile goes is refused (ELOOP), not written through.
    (The run was refused already if the output folder held one: `farm.linkcheck`.)"""
    fd = os.open(path, _TILE_FLAGS, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:  # a full disk: no empty or cut tile is left (its job is not done)
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
