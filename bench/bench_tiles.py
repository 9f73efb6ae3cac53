"""Map tiles on a local farm against one process rendering one tile at a time, in the same run.

    python bench/bench_tiles.py [--zoom 0-6] [--agents 2] [--format png] [--no-breakdown]

The project is the world_map sample (copied to a temp folder) at the zooms given.
- baseline: this process, one 256 px render per tile (no metatile), PNG encode and file
  write included, one `mapnik.Map` loaded once: what a naive tile script does.
- farm: `farm.embedded.submit_embedded` with --agents local agents (controller, agent
  start-up, file sync and MBTiles collation all included): wall-clock time of the call.
- breakdown (unless --no-breakdown): the same pipeline in this process (`farm.testing.run_local`),
  which separates what metatiles win from what parallel agents win.
The machine may be shared: print the load average with the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import mapnik
from farm_maptiles.config import parse_zoom
from farm_maptiles.mapstyle import load_map
from farm_maptiles.metatile import ENCODINGS, render_block, tile_name
from farm_maptiles.tilemath import WORLD_BBOX, tile_range

from farm.embedded import submit_embedded
from farm.testing import run_local

SAMPLE = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"


def make_project(folder: Path, zoom: str, fmt: str) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(SAMPLE / "world.xml", folder / "world.xml")
    shutil.copytree(SAMPLE / "data", folder / "data")
    (folder / "farm.toml").write_text(
        '[project]\nname = "world_map"\nmedia_type = "maptiles"\n\n'
        f'[maptiles]\nstyle = "world.xml"\nzoom = "{zoom}"\nformat = "{fmt}"\n'
        'attribution = "Made with Natural Earth"\n'
    )
    return folder


def baseline(project: Path, zoom: str, fmt: str, out: Path) -> tuple[int, float]:
    """One render + one encode + one file per tile, in this process."""
    start = time.perf_counter()
    m = load_map((project / "world.xml").read_text(), project)
    encoding = ENCODINGS[fmt]
    low, high = parse_zoom(zoom)
    n = 0
    for z in range(low, high + 1):
        for x, y in tile_range(WORLD_BBOX, z).tiles():
            image = render_block(m, z, x, y, 1, 256)
            path = out / tile_name(z, x, y)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image.to_string(encoding))
            n += 1
    return n, time.perf_counter() - start


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoom", default="0-6")
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--format", default="png", choices=sorted(ENCODINGS))
    parser.add_argument("--no-breakdown", action="store_true")
    args = parser.parse_args()

    print(f"mapnik {mapnik.version_string()}",
          f"| {os.cpu_count()} cores | load average {load()} | zoom {args.zoom} | format {args.format}")
    with tempfile.TemporaryDirectory(prefix="bench-tiles-") as tmp:
        root = Path(tmp)
        n, base_s = baseline(make_project(root / "base", args.zoom, args.format), args.zoom, args.format,
                             root / "base" / "output")
        print(f"baseline  1 process, 1 tile per render : {n:6d} tiles {base_s:8.2f} s "
              f"{n / base_s:8.1f} tiles/s")

        if not args.no_breakdown:
            project = make_project(root / "local", args.zoom, args.format)
            start = time.perf_counter()
            run = run_local(project)
            local_s = time.perf_counter() - start
            print(f"farm      1 process, metatiles (run_local): {len(run.jobs):4d} jobs  {local_s:8.2f} s "
                  f"{n / local_s:8.1f} tiles/s  x{base_s / local_s:.2f}")

        project = make_project(root / "farm", args.zoom, args.format)
        start = time.perf_counter()
        summary = submit_embedded(project, agents=args.agents)
        farm_s = time.perf_counter() - start
        if not summary.ok:
            raise SystemExit(f"farm run failed: {summary.error or summary.failures}")
        tiles = sum(1 for _ in (project / "output" / "tiles").rglob("*.png"))
        assert tiles == n, f"farm wrote {tiles} tiles, expected {n}"
        print(f"farm      {args.agents} agents (submit_embedded)     : {summary.total:4d} jobs  "
              f"{farm_s:8.2f} s "
              f"{n / farm_s:8.1f} tiles/s  (controller elapsed {summary.elapsed_s:.2f} s)")
        print(f"speed-up  farm vs baseline: x{base_s / farm_s:.2f} (target >= 2.5) | load average {load()}")


if __name__ == "__main__":
    main()
