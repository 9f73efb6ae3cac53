"""The MBTiles file of a maptiles run removed while the run writes it (`rm -rf output` racing the
collates fails with "Directory not empty" and leaves the folder, so the folder's identity check
does not see it gone). Before: the run failed with SQLite's "attempt to write a readonly database"
read as the controller's disk ("make room or make the folder writable", `code` "controller_disk"),
wrong advice: the disk is not full. Now the run stops saying the MBTiles file (named) was removed
while the run wrote it, at the first collate after (SQLite would go on committing into the
removed file's WAL), no job blamed, `code` "output_removed".

A real controller, a real agent process, real Mapnik renders and real SQLite; the file is removed
while the run is paused (after a job was collated), so jobs are still to be collated after it.
"""

from __future__ import annotations

import logging

import pytest
from conftest import Background, wait_for
from control_helpers import EventLog
from test_output_removed_mid_run import FIRST, world_map

from farm.client import Client

pytest.importorskip("mapnik")


def test_the_mbtiles_file_removed_mid_run_stops_it_naming_the_file_not_the_disk(
        tmp_path, controller, agents, caplog):
    caplog.set_level(logging.WARNING, logger="farm")
    project = world_map(tmp_path / "wm")
    mbtiles = project / "output" / "world_map.mbtiles"
    events = EventLog(controller)
    run = Background(controller.url, project)
    agents(controller.url, 1)
    wait_for(lambda: [e for e in events.of("job.done") if e.job == FIRST], 120, f"job {FIRST} collated")
    run_id = events.of("job.done")[0].run
    with Client(controller.url, timeout=10) as client:
        client.pause(run_id)
        # what `rm -rf output` removed before it failed on a folder a collate wrote into meanwhile
        for side in ("", "-wal", "-shm"):
            mbtiles.with_name(mbtiles.name + side).unlink(missing_ok=True)
        client.resume(run_id)
    wait_for(run.done, 300, "the run")
    assert run.error is None, run.error
    summary = run.summary
    # before: "cannot write the output folder ...: OperationalError: attempt to write a readonly
    # database, ...: make room or make the folder writable", code "controller_disk"
    assert summary.state == "failed" and not summary.failures and summary.code == "output_removed", summary
    assert summary.error.startswith(f"the MBTiles file {mbtiles} was removed or replaced while the run wrote "
                                    "it (found collating job "), summary.error
    assert "make room" not in summary.error and summary.error.endswith("submit the project again"), \
        summary.error
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and str(mbtiles) in said[0] and "make room" not in said[0], said  # once
