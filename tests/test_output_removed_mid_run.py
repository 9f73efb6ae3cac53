"""An output folder removed while a run writes there (`rm -rf wm/output` during `farm submit`) failed
the run with `collating its outputs failed: FileNotFoundError: ... tiles/7/64/120.png` and, for the
maptiles finalize, `attempt to write a readonly database`: the first named a tile, the second no
file, and neither said the folder had gone. Now the run stops once, saying "the output folder ... was
removed or moved away during the run" (farm.controller.outputfolder; tests/test_output_folder_gone.py for
any media type), and the SQLite error of the MBTiles file deleted while open names the file.

A real controller, a real agent process, real Mapnik renders and real SQLite; the folder is removed
while the run is paused (after a job was collated), so jobs are still to be collated after it.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import Background, wait_for
from control_helpers import EventLog

from farm.client import Client
from farm.errors import ControlError

pytest.importorskip("mapnik")

WORLD_MAP = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"


FIRST = "6/0/0+8"  # the first zoom-6 job (jobs go out in key order, a few ahead)


def world_map(dest):
    shutil.copytree(WORLD_MAP, dest, ignore=shutil.ignore_patterns("output", ".farm"))
    toml = dest / "farm.toml"
    toml.write_text(toml.read_text().replace('zoom = "0-5"', 'zoom = "0-6"'))  # 18 jobs, 8 at zoom 6
    return dest


def test_an_output_folder_removed_mid_run_is_said_once_naming_it(
        tmp_path, controller, agents, caplog):
    caplog.set_level(logging.WARNING, logger="farm")
    project = world_map(tmp_path / "wm")
    output = project / "output"
    events = EventLog(controller)
    run = Background(controller.url, project)
    agents(controller.url, 1)
    # every zoom-6 job writes into the same folders tiles/6/X: the next ones find them gone
    wait_for(lambda: [e for e in events.of("job.done") if e.job == FIRST], 120, f"job {FIRST} collated")
    run_id = events.of("job.done")[0].run
    with Client(controller.url, timeout=10) as client:
        client.pause(run_id)
        started = {e.job for e in events.settled().of("job.started")}
        assert not {f"6/0/{y}+8" for y in range(8, 64, 8)} <= started, started  # some are still to come
        while output.exists():  # as `rm -rf` does: what a collate still in flight moves meanwhile is no error
            shutil.rmtree(output, ignore_errors=True)
        try:
            client.resume(run_id)
        except ControlError as exc:  # a collate in flight through the pause found it gone first: stopped
            assert "not running" in str(exc), exc
    wait_for(run.done, 300, "the run")
    assert run.error is None, run.error
    summary = run.summary
    # before: each job after it failed "collating its outputs failed: FileNotFoundError: [Errno 2] ...:
    # '.../tiles/6/0/8.png'", and the finalize "attempt to write a readonly database". Now the run
    # stops at the first collate that finds the folder gone (farm.controller.outputfolder), no job blamed
    assert summary.state == "failed" and not summary.failures and summary.code == "output_removed", summary
    # the folder, or (a collate in flight through the pause met it first) a file in it, named as removed
    assert summary.error.startswith((f"the output folder {output} was removed or moved away during the run",
                                     f"{output}/")) and " was removed " in summary.error, summary.error
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and said[0].endswith("no job is to blame: submit the project again"), said  # once


def test_the_mbtiles_file_deleted_while_open_is_named(tmp_path):
    from farm_maptiles.mbtiles import MBTilesWriter

    from farm.outputgone import OutputRemoved  # new

    path = tmp_path / "out" / "wm.mbtiles"
    writer = MBTilesWriter(path)
    writer.add_tiles([(0, 0, 0, b"png")])
    path.unlink()
    # before: into the removed file's write-ahead log, without a word; SQLite found out only at the end
    with pytest.raises(OutputRemoved, match=f"^the MBTiles file {path} was removed or replaced while the run "
                                            "wrote it$"):
        writer.add_tiles([(1, 0, 0, b"png")])
    with pytest.raises(OutputRemoved) as gone:
        writer.close()
    # before: sqlite3.OperationalError "attempt to write a readonly database", no file named
    said = str(gone.value)
    assert said.startswith(f"the MBTiles file {path} was removed or replaced while the run wrote it (attempt "
                           "to write a readonly database"), said
    assert isinstance(gone.value.__cause__, sqlite3.Error)  # the SQLite error stays its cause

    writer = MBTilesWriter(path)
    path.unlink()
    MBTilesWriter(path).close()  # another file of that name: replaced
    with pytest.raises(OutputRemoved, match="^the MBTiles file .* was removed or replaced while the run"):
        writer.add_tiles([(1, 0, 0, b"png")])
    writer.db.close()

    writer = MBTilesWriter(path)
    shutil.rmtree(path.parent)
    path.parent.mkdir()  # removed and made again: the folder is named
    with pytest.raises(OutputRemoved, match=f"^the output folder {path.parent} was removed during the run "
                                            r"\(wm.mbtiles: attempt to write a readonly database"):
        writer.close()


def test_a_collate_of_any_media_type_that_found_the_folder_gone_says_so(tmp_path):
    from farm.outputgone import removed_during_run  # new

    output = tmp_path / "output"
    (output / "frames").mkdir(parents=True)
    other = RuntimeError("a bad render")
    assert removed_during_run(output, other) is None
    shutil.rmtree(output / "frames")
    try:
        (output / "frames" / "0001.png").write_bytes(b"")
    except FileNotFoundError as exc:
        lost = exc
    assert removed_during_run(output, lost).startswith(
        f"{output / 'frames'} was removed during the run (in the output folder {output}; FileNotFoundError: ")
    shutil.rmtree(output)
    assert removed_during_run(output, other) == \
        f"the output folder {output} was removed during the run (RuntimeError: a bad render)"
