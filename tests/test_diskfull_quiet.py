"""A full disk under an embedded farm, again: a resubmit while the disk was still full crashed the
controller (its hash cache's commit refused), `--json` printed nothing; a run stopped for the disk
said its reason with warnings about its finalize and about the workers the agent itself killed to
withdraw the run's jobs. Real tmpfs mounts (skipped where none can be mounted), real agents, real SQLite.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time

from agent_trust_helpers import AgentTmp
from conftest import Background, wait_for
from control_helpers import EventLog
from test_diskfull_state import SIZE, farm_submit_json, fill, small_tmpfs, unmount

from farm.client import Client, submit
from farm.filesync.hashcache import HashCache
from farm.project import STATE_DIR, load_project


def age(project) -> None:
    """Files hashed now are cached (no longer "racily clean", `farm.filesync.hashcache.RACY_NS`)."""
    old = time.time() - 3600
    for folder, _, files in os.walk(project):
        for name in files:
            os.utime(os.path.join(folder, name), (old, old))


def test_an_embedded_resubmit_on_a_still_full_disk_says_why_once(tmp_path, synthetic):
    made = synthetic(jobs=12, output_bytes=SIZE)
    project = tmp_path / "small"
    small_tmpfs(project, "1m")
    try:
        shutil.copytree(made, project, dirs_exist_ok=True)
        for attempt in (1, 2):  # the second: no room at all, and its hash cache has hashes to write
            code, answer, stderr = farm_submit_json(project)
            assert code == 1 and answer["state"] == "failed", (attempt, answer, stderr)
            assert answer["code"] == "controller_disk" and not answer.get("failures"), (attempt, answer)
            assert f"the controller's state folder {project / STATE_DIR} cannot be written" in answer["error"]
            assert "Traceback" not in stderr and "crashed" not in stderr, (attempt, stderr)
            said = [line for line in stderr.splitlines() if "cannot be written" in line]
            assert len(said) <= 1, (attempt, stderr)  # the reason, once (a refusal: in the JSON alone)
            # (a worker killed as the embedded agents stop can still be reported: not asserted here)
            assert "finalize" not in stderr, (attempt, stderr)
            age(project)
            filler = fill(project / STATE_DIR)  # what the run's staging freed, taken
            os.truncate(filler, filler.stat().st_size - 32 * 1024)  # but the journal's opening
    finally:
        unmount(project)


def test_a_hash_cache_whose_disk_is_full_keeps_its_hashes_in_memory(tmp_path, caplog):
    folder = tmp_path / "disk"
    small_tmpfs(folder, "256k")
    try:
        data = tmp_path / "data"
        data.write_bytes(b"x" * 100)
        os.utime(data, (time.time() - 3600,) * 2)
        st = os.stat(data)
        cache = HashCache(folder / "hashes.sqlite")
        filler = fill(folder)
        caplog.set_level(logging.INFO, "farm.filesync.hashcache")
        for n in range(600):  # past a flush of its own (512)
            cache.put(f"/f{n}", st, 4096, b"h" * 32, time.time_ns())
        cache.flush()
        cache.flush()
        assert cache.get("/f599", st, 4096) == b"h" * 32  # from memory
        said = [r for r in caplog.records if "hash cache" in r.getMessage()]
        assert len(said) == 1 and "full" in said[0].getMessage(), caplog.text
        filler.unlink()  # room again: what memory held is written with the next flush
        cache.put("/late", st, 4096, b"l" * 32, time.time_ns())
        cache.close()
        with sqlite3.connect(folder / "hashes.sqlite") as db:
            assert db.execute("SELECT count(*) FROM hashes").fetchone()[0] == 601
    finally:
        unmount(folder)


def test_a_worker_the_agent_kills_to_cancel_its_job_is_no_fault(controller, synthetic, tmp_path):
    slow = synthetic(jobs=1, sleep=600, render_log="renders.log")
    quick = synthetic(jobs=1)
    log_file = tmp_path / "agent.log"
    agent_tmp = AgentTmp()
    with open(log_file, "wb") as out:
        cmd = [sys.executable, "-m", "farm", "--log-level", "warning", "agent", "--controller",
               controller.url,
               "--slots", "1", "--parent-pid", str(os.getpid()), "--id", "a1"]
        agent = subprocess.Popen(cmd, stdout=out, stderr=out, env={**os.environ, **agent_tmp.env})
    try:
        events = EventLog(controller)
        run = Background(controller.url, slow)
        wait_for(lambda: agent_tmp.lines("renders.log"), 120, "the slow job rendering")
        with Client(controller.url) as client:
            client.cancel(events.of("job.started")[0].run)
        wait_for(run.done, 120, "the cancelled run")
        after = submit(controller.url, load_project(quick))  # on the same slot: its worker restarted
        assert after.state == "done", after
    finally:
        agent.terminate()
        agent.wait(60)
        agent_tmp.close()
    assert "exited with code" not in log_file.read_text(), log_file.read_text()
