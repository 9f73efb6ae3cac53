"""Map tile jobs of several metatiles (adaptive chunks): real Mapnik, real agents, real journal.

A job groups consecutive metatiles of one row (`farm_maptiles.grouping`); the controller's
advisor sizes it. What must hold: every metatile in exactly one job, outputs identical to one
metatile per job, jobs done before found again whatever grouping made them (a re-submit, a
wider zoom range, a resume after the controller was killed), and a fixed ``chunk`` kept.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from conftest import wait_for
from farm_maptiles import grouping
from farm_maptiles.bundle import BundleError, read_bundle
from farm_maptiles.tilemath import metatile_size, metatiles
from test_maptiles import make_project, render_job

from farm.client import Client
from farm.controller.chunking import AdaptiveChunks
from farm.embedded import submit_embedded
from farm.mediatype import ChunkAdvisor
from farm.plugins import get_media_type
from farm.errors import ProjectError
from farm.project import load_project

pytestmark = pytest.mark.skipif(
    get_media_type("maptiles").available() is not None, reason="Mapnik does not import"
)

#: the world at z0-5 in 4x4 metatiles: 87 metatiles, rows of up to 8
TABLE = 'style = "world.xml"\nzoom = "0-5"\nmetatile = 4\n'


def all_metatiles(settings) -> list[tuple[int, int, int]]:
    return [(z, m.x, m.y) for z in range(settings["minzoom"], settings["maxzoom"] + 1)
            for m in metatiles(settings["bbox"], z, settings["metatile"])]


def metatiles_of_key(key: str, metatile: int) -> list[tuple[int, int, int]]:
    """The metatiles a job key names: ``z/x/y`` or ``z/x/y+n`` (n consecutive ones of a row)."""
    head, _, count = key.partition("+")
    z, x, y = (int(v) for v in head.split("/"))
    size = metatile_size(metatile, z)
    return [(z, x + i * size, y) for i in range(int(count or 1))]


def done_keys(root: Path) -> list[str]:
    with sqlite3.connect(root / ".farm" / "journal.sqlite") as db:
        return [key for (key,) in db.execute("SELECT DISTINCT key FROM jobs WHERE state = 'done'")]


def assert_partition(keys, settings) -> None:
    """Every metatile of the project in exactly one of the jobs ``keys``."""
    covered = [m for key in keys for m in metatiles_of_key(key, settings["metatile"])]
    assert sorted(covered) == sorted(all_metatiles(settings)), sorted(keys)


def tile_bytes(output: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output)): p.read_bytes() for p in (output / "tiles").rglob("*.png")}


def mbtiles_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles "
                          "ORDER BY zoom_level, tile_column, tile_row").fetchall()


# -- the split, without sockets ------------------------------------------------------------------


def test_fast_metatiles_make_groups_of_a_row_that_shrink_at_the_end(tmp_path):
    project = load_project(make_project(tmp_path / "p", TABLE))
    media = get_media_type("maptiles")
    chunks = AdaptiveChunks(target_s=60.0)
    chunks.saw("a", 1, 2)
    chunks.saw("b", 1, 2)
    jobs = []
    for job in media.split(project, chunks):
        jobs.append(job)
        for agent in "ab":  # metatiles of 40 ms: the target would take far more than a row
            chunks.record(agent, job.units, 0.04 * job.units)
    settings = project.settings
    assert len(jobs) < len(all_metatiles(settings)) == 87
    assert_partition([j.key for j in jobs], settings)
    for job in jobs:
        metas = grouping.job_metatiles(job.params)
        assert job.units == len(metas) and len({y for _, y, _ in metas}) == 1  # one row only
        assert job.key.endswith(f"+{len(metas)}") == (len(metas) > 1)
    assert max(j.units for j in jobs) == 8  # a whole z5 row (8 metatiles of 4x4)
    assert jobs[-1].units < 8  # the tail: what is left over the 2 slots
    assert sum(media.units(j, project) for j in jobs) == media.total_units(project) == 1365


def test_a_fixed_chunk_is_kept_and_counted(tmp_path):
    project = load_project(make_project(tmp_path / "p", TABLE + "chunk = 3\n"))
    media = get_media_type("maptiles")
    jobs = list(media.split(project, AdaptiveChunks(target_s=60.0)))  # fixed: the advisor is not asked
    assert [j.units for j in jobs if j.key.startswith("5/")] == [3, 3, 2] * 8  # rows of 8
    assert media.count(project) == len(jobs)
    assert_partition([j.key for j in jobs], project.settings)
    one = load_project(make_project(tmp_path / "q", TABLE))
    assert [j.key for j in media.split(one)] == [f"{z}/{x}/{y}" for z, x, y in all_metatiles(one.settings)]


def test_a_job_is_capped_at_1024_tiles(tmp_path):
    project = load_project(make_project(tmp_path / "p", 'style = "world.xml"\nzoom = "7"\nmetatile = 8\n'))
    chunks = AdaptiveChunks(target_s=3600.0)
    chunks.record("a", 1, 0.001)
    jobs = list(get_media_type("maptiles").split(project, chunks))
    assert max(j.units for j in jobs) == 16 and len(jobs) >= 16  # 16 metatiles of 64 tiles, rows of 16


def test_a_fixed_chunk_over_the_cap_is_refused_when_the_project_loads(tmp_path):
    """Not after the first job renders: a fixed chunk keeps the 1,024 tiles of an adaptive job."""
    table = 'style = "world.xml"\nzoom = "8"\nmetatile = 8\nchunk = 17\n'
    with pytest.raises(ProjectError) as refused:
        load_project(make_project(tmp_path / "p", table))
    message = str(refused.value)
    assert "farm.toml:" in message and "chunk" in message and "1088 tiles" in message
    assert "chunk <= 16 at metatile = 8" in message
    widest = load_project(make_project(tmp_path / "q", table.replace("chunk = 17", "chunk = 16")))
    jobs = list(get_media_type("maptiles").split(widest))
    assert max(len(grouping.job_metatiles(j.params)) * 64 for j in jobs) == 1024
    small = load_project(make_project(tmp_path / "r", TABLE + "chunk = 64\n"))  # 4 x 4: 64 of them fit
    assert small.settings["chunk"] == 64


def test_a_bundle_of_several_metatiles_is_checked_tile_by_tile(tmp_path):
    table = 'style = "world.xml"\nzoom = "2"\nmetatile = 1\nchunk = 4\n'
    project = load_project(make_project(tmp_path / "p", table))
    media = get_media_type("maptiles")
    job = next(iter(media.split(project, ChunkAdvisor())))
    assert job.key == "2/0/0+4" and job.units == 4
    tiles = render_job(media, project, job, tmp_path / "out", {})
    assert sorted(tiles) == [f"tiles/2/{x}/0.png" for x in range(4)]
    (bundle,) = (tmp_path / "out").glob("*.tiles")
    wanted = [r for _, _, r in grouping.job_metatiles(job.params)]
    body = msgpack.unpackb(bundle.read_bytes())
    for change, message in [(lambda t: t.pop(), "1 of the job's tiles are missing, first 2/3/0"),
                            (lambda t: t.append([1, 1, t[0][2]]), "tile 2/1/1 is outside"),
                            (lambda t: t.append(list(t[1])), "appears twice")]:
        bad = {"z": 2, "tiles": [list(t) for t in body["tiles"]]}
        change(bad["tiles"])
        bundle.write_bytes(msgpack.packb(bad))
        with pytest.raises(BundleError, match=message):
            read_bundle(bundle, wanted)


# -- real runs on 2 agents -----------------------------------------------------------------------


@pytest.mark.timeout(400)
def test_grouped_runs_write_the_same_tiles_and_reuse_any_earlier_grouping(tmp_path):
    """Adaptive (grouped) and one metatile per job give the same bytes; a re-submit with another
    grouping reuses every job, and a wider zoom range renders only the new zoom."""
    fixed = make_project(tmp_path / "fixed", TABLE + "chunk = 1\n")
    grouped = make_project(tmp_path / "grouped", TABLE + "chunk = 2\n")
    one = submit_embedded(fixed, agents=2)
    assert one.ok, one.failures
    assert one.total == one.done == 87
    two = submit_embedded(grouped, agents=2)
    assert two.ok, two.failures
    keys = done_keys(grouped)
    sizes = [len(metatiles_of_key(k, 4)) for k in keys]
    assert two.done == len(keys) < 87 and max(sizes) == 2  # the fixed chunk of 2, a row's end cutting
    assert_partition(keys, load_project(grouped).settings)
    assert tile_bytes(grouped / "output") == tile_bytes(fixed / "output")
    assert len(tile_bytes(fixed / "output")) == 1365
    name = "output/world_test.mbtiles"
    assert mbtiles_rows(grouped / name) == mbtiles_rows(fixed / name)

    # adaptive now (no chunk): the advisor walks each row and finds the pairs done before
    toml = grouped / "farm.toml"
    toml.write_text(toml.read_text().replace("chunk = 2\n", ""))
    again = submit_embedded(grouped, agents=2)
    assert again.ok, again.failures
    assert again.reused == again.done == again.total == len(keys)  # nothing rendered
    toml.write_text(toml.read_text() + "chunk = 1\n")  # a fixed chunk finds them too
    fixed_again = submit_embedded(grouped, agents=2)
    assert fixed_again.ok, fixed_again.failures
    assert fixed_again.reused == fixed_again.done == fixed_again.total == len(keys)
    toml.write_text(toml.read_text().replace("chunk = 1\n", ""))

    # and a wider range: z0-5 as it was cut, z6 grouped by the advisor (fewer jobs than metatiles)
    toml.write_text(toml.read_text().replace('zoom = "0-5"', 'zoom = "0-6"'))
    wider = submit_embedded(grouped, agents=2)
    assert wider.ok, wider.failures
    assert wider.reused == len(keys)
    assert 0 < wider.done - wider.reused < 256  # z6: 256 metatiles of 4x4, grouped
    assert_partition(set(done_keys(grouped)) - set(keys), load_project(grouped).settings | {"minzoom": 6})
    assert len(tile_bytes(grouped / "output")) == 1365 + 4096


@pytest.mark.timeout(400)
def test_a_run_resumed_after_the_controller_was_killed_skips_the_groups_done(tmp_path, agents):
    """SIGKILL the controller mid-run (paused, so mid-run whatever the load); a new controller on
    the same state resumes it: the jobs done before are found (no metatile in two done jobs),
    every tile is written."""
    project = make_project(tmp_path / "p", 'style = "world.xml"\nzoom = "0-6"\nmetatile = 4\n')
    url = f"ipc://{tmp_path}/ctl.sock"
    state = tmp_path / "state"
    socket = tmp_path / "ctl.sock"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def controller() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "farm", "--log-level", "warning", "controller",
                                 "--bind", url, "--state-dir", str(state), "--heartbeat", "0.5",
                                 "--liveness", "6"], env=env)
        wait_for(lambda: socket.exists() or proc.poll() is not None, 60, "the controller")
        assert proc.poll() is None
        return proc

    first = controller()
    second = None
    try:
        agents(url, 2, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
        with Client(url) as client:
            run = client.submit(load_project(project))
            wait_for(lambda: client.project(run)["done"] >= 12, 240, "some jobs done")
            client.pause(run)
            wait_for(lambda: client.project(run)["running"] == 0, 120, "the jobs in flight")
            wait_for(lambda: client.project(run)["done"] == len(done_in(state, run)), 60,
                     "the journal's commit")
            before = done_in(state, run)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        socket.unlink(missing_ok=True)
        second = controller()
        with Client(url) as client:
            snap = client.project(run)
            assert snap["paused"] and snap["resumed"] == len(before) >= 12
            client.resume(run)
            wait_for(lambda: client.project(run)["state"] == "done", 300, "the resumed run to end")
        after = done_in(state, run)
        assert set(before) <= set(after)
        assert_partition(after, load_project(project).settings)  # no metatile rendered in two jobs
        assert len(after) < 1 + 1 + 1 + 4 + 16 + 64 + 256  # grouped
        assert len(tile_bytes(project / "output")) == 5461
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def done_in(state: Path, run: str) -> list[str]:
    with sqlite3.connect(state / "journal.sqlite") as db:
        rows = db.execute("SELECT key FROM jobs WHERE project_id = ? AND state = 'done'", (run,))
        return [key for (key,) in rows]
