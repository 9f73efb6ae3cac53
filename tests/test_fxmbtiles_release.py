"""A map run that ends cancelled, failed or with the controller stopping used to keep its MBTiles
file open on the controller: its ``-wal`` and ``-shm`` were served beside it for download, and a
later finished run's file, downloaded into the same folder, was read through that stale WAL
("database disk image is malformed", or a few tiles instead of all). Now the media type's
`release` closes the writer at every run end, side files are never served, and a download that
replaces an SQLite file removes the stale side files beside it. Real controller, real agents,
real Mapnik, real `farm submit --controller` and `farm cancel --download`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import wait_for
from test_diskfull_state import fill, small_tmpfs, unmount

from farm.client import Client
from farm.controller.server import Controller
from farm.project import load_project
from farm.protocol import T

FARM = [sys.executable, "-m", "farm"]
WORLD = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"
SIDES = ("-wal", "-shm", "-journal")


def world_map(tmp_path: Path) -> Path:
    """The sample world map, zoom 0-6 in one-metatile jobs: long enough to cancel halfway."""
    root = tmp_path / "world_map"
    shutil.copytree(WORLD, root, ignore=shutil.ignore_patterns("output", ".farm"))
    toml = (root / "farm.toml").read_text()
    (root / "farm.toml").write_text(re.sub(r'^zoom = .*$', 'zoom = "0-6"\nchunk = 1', toml, flags=re.M))
    return root


def open_fds(path_part: str) -> list[str]:
    """This process's files (the controller runs in it) whose path holds ``path_part``, open for
    writing (SQLite's), or side files. The file server's cached read-only fds of what it serves are
    no writer's."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError):
            continue
        if path_part in target and (flags & os.O_ACCMODE != os.O_RDONLY or target.endswith(SIDES)):
            found.append(target)
    return found


def tile_count(mbtiles: Path) -> int:
    db = sqlite3.connect(f"file:{mbtiles}?mode=ro", uri=True)
    try:
        return db.execute("select count(*) from tiles").fetchone()[0]
    finally:
        db.close()


def stale_wal(folder: Path, name: str) -> None:
    """Side files of another database as ``name``'s in ``folder``: what an older controller served."""
    other = folder.parent / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("create table tiles (zoom_level, tile_column, tile_row, tile_data)")
    db.executemany("insert into tiles values (?, ?, ?, ?)", [(0, 0, i, b"x" * 3000) for i in range(21)])
    db.commit()
    for suffix in ("-wal", "-shm"):
        shutil.copyfile(f"{other}{suffix}", folder / f"{name}{suffix}")
    db.close()


def test_a_cancelled_map_run_then_a_finished_one_download_a_whole_mbtiles(controller, agents, tmp_path):
    agents(controller.url, 2)
    project = world_map(tmp_path)
    first = subprocess.Popen([*FARM, "submit", "--controller", controller.url, str(project)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: controller.stats["collated"] >= 3, 240, "some metatiles to be collated")
        got = tmp_path / "cdl"
        cancel = subprocess.run([*FARM, "cancel", "--controller", controller.url, "world_map",
                                 "--download", str(got)], capture_output=True, text=True, timeout=240)
        first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert cancel.returncode == 0, cancel.stderr
    # the controller holds nothing of the cancelled run's file, and served it whole, alone
    assert open_fds("world_map.mbtiles") == []
    assert not [p.name for p in got.iterdir() if p.name.endswith(SIDES)]
    assert tile_count(got / "world_map.mbtiles") == len(list((got / "tiles").rglob("*.png"))) > 0

    # a client folder that holds stale side files (an older controller served them): a finished
    # run's download replaces the file and removes them
    output = project / "output"
    stale_wal(output, "world_map.mbtiles")
    again = subprocess.run([*FARM, "submit", "--json", "--controller", controller.url, str(project)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["state"] == "done", summary
    assert not [p.name for p in output.iterdir() if p.name.endswith(SIDES)]
    tiles = len(list((output / "tiles").rglob("*.png")))
    assert tiles == 5461  # zoom 0-6 of the whole world
    assert tile_count(output / "world_map.mbtiles") == tiles
    assert open_fds("world_map.mbtiles") == []


def test_a_map_run_failed_for_a_full_state_disk_then_a_resubmit_downloads_a_whole_mbtiles(agents, tmp_path):
    state = tmp_path / "state"
    small_tmpfs(state, "64m")
    project = world_map(tmp_path)
    ctl = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4).start()
    try:
        agents(ctl.url, 2)
        first = subprocess.Popen([*FARM, "submit", "--json", "--controller", ctl.url, str(project)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: ctl.stats["collated"] >= 3, 240, "some metatiles to be collated")
            filler = fill(state)
            out, err = first.communicate(timeout=240)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        failed = json.loads(out)
        assert failed["state"] == "failed" and failed["code"] == "controller_disk", failed
        # the failed run's file is closed (released off the loop once the run ended)
        wait_for(lambda: open_fds(str(state / "uploads")) == [], 60, "the failed run's MBTiles closed")
        filler.unlink()  # room again
        again = subprocess.run([*FARM, "submit", "--json", "--controller", ctl.url, str(project)],
                               capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["state"] == "done", again.stdout
    finally:
        ctl.stop(shutdown_agents=True)
        unmount(state)
    output = project / "output"
    assert not [p.name for p in output.iterdir() if p.name.endswith(SIDES)]
    assert tile_count(output / "world_map.mbtiles") == len(list((output / "tiles").rglob("*.png"))) == 5461


def test_a_controller_that_stops_mid_run_leaves_its_mbtiles_closed(agents, tmp_path):
    project = world_map(tmp_path)
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4)
    ctl.start()
    try:
        agents(ctl.url, 1)
        with Client(ctl.url) as client:
            wire = load_project(project).to_wire()
            client.request(T.SUBMIT, {"project": wire, "priority": 0, "upload": False}, expect=(T.ACCEPTED,))
        wait_for(lambda: ctl.stats["collated"] >= 2, 240, "some metatiles to be collated")
    finally:
        ctl.stop(shutdown_agents=True)
    output = project / "output"
    assert open_fds(str(output)) == []
    assert not [p.name for p in output.iterdir() if p.name.endswith(SIDES)]
    assert tile_count(output / "world_map.mbtiles") == len(list((output / "tiles").rglob("*.png"))) > 0


def test_an_open_sqlite_outputs_side_files_are_not_served(controller, tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    db = sqlite3.connect(out / "map.mbtiles")  # left open in WAL mode: its side files are there
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("create table tiles (tile_data)")
    db.commit()
    (out / "notes-journal").write_text("a file of that name alone is the user's\n")
    try:
        assert (out / "map.mbtiles-wal").exists() and (out / "map.mbtiles-shm").exists()
        with caplog.at_level("WARNING", logger="farm.controller.assets"):
            [tree] = controller.assets.publish_outputs("run-1.output", out)
    finally:
        db.close()
    manifest = controller.assets.server.published(tree)
    assert sorted(entry.path for entry in manifest.entries) == ["map.mbtiles", "notes-journal"]
    assert "not serving 2 files (an SQLite file's side files, left open): map.mbtiles-shm, " \
           "map.mbtiles-wal" in caplog.text
