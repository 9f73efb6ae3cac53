"""The controller's own disk full under what it is sent or opens: a remote submit whose upload finds
no room in the controller's state folder ("internal error: OSError", a traceback, a partial upload
left), a journal or a job-log store opened on a disk with no room at all ("is it a farm journal?
Move it away"). Each now says the disk is full, names the folder, and (where it is an answer to a
submitter) carries code "controller_disk". Real tmpfs mounts (skipped where none can be mounted),
real ZeroMQ, real SQLite.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
from test_diskfull_state import farm_submit_json, fill, small_tmpfs, unmount

from farm.cli.errors import error_code
from farm.client import Client
from farm.controller.joblogstore import open_beside
from farm.controller.server import Controller
from farm.journal import Journal, JournalError
from farm.project import STATE_DIR


@pytest.fixture
def state(tmp_path):
    folder = tmp_path / "state"
    yield folder
    unmount(folder)


def test_a_remote_submit_whose_upload_finds_the_state_disk_full_says_so(state, synthetic, caplog):
    small_tmpfs(state, "1m")
    project = synthetic(jobs=2)
    (project / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))  # more than the state disk holds
    with open(project / "farm.toml", "a") as toml:
        toml.write('\n[assets]\ninclude = ["big.bin"]\n')
    ctl = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4).start()
    try:
        with caplog.at_level(logging.INFO):
            done = subprocess.run([sys.executable, "-m", "farm", "submit", "--json", "--controller", ctl.url,
                                   str(project)], capture_output=True, text=True, timeout=300)
        answer = json.loads(done.stdout)
        assert done.returncode == 1 and answer["state"] == "failed", (answer, done.stderr)
        assert answer["code"] == "controller_disk", answer
        assert f"the controller's state folder {state}" in answer["error"], answer
        assert "ENOSPC" in answer["error"], answer
        assert "Traceback" not in caplog.text, caplog.text
        said = [r for r in caplog.records if "ENOSPC" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
        assert not list((state / "uploads").iterdir()), list((state / "uploads").rglob("*"))
        assert ctl.crash is None and ctl.wait(0), ctl.crash
        with Client(ctl.url) as client:
            client.status()
    finally:
        ctl.stop()


@pytest.mark.parametrize("there", [False, True], ids=["new", "existing"])  # SQLite: FULL, then IOERR
def test_a_journal_opened_on_a_full_disk_says_the_disk_is_full(state, there):
    small_tmpfs(state, "256k")
    if there:
        Journal(state / "journal.sqlite").close()
    fill(state)
    with pytest.raises(JournalError) as refused:
        Journal(state / "journal.sqlite")
    said = str(refused.value)
    assert f"{state} is full" in said, said
    assert "Move it away" not in said and "is it a farm journal" not in said, said
    assert error_code(refused.value) == "controller_disk", said


def test_an_embedded_submit_on_a_full_disk_says_the_disk_is_full(tmp_path, synthetic):
    made = synthetic(jobs=2)
    project = tmp_path / "small"
    small_tmpfs(project, "1m")
    try:
        shutil.copytree(made, project, dirs_exist_ok=True)
        fill(project)
        code, answer, stderr = farm_submit_json(project)
        assert code == 1 and answer["state"] == "failed", (answer, stderr)
        assert answer["code"] == "controller_disk", answer
        assert f"{project / STATE_DIR} is full" in answer["error"], answer
        assert "Move it away" not in answer["error"] and "Traceback" not in stderr, (answer, stderr)
    finally:
        unmount(project)


def record(n: int) -> tuple:
    return (n, "agent-0", "done", None, 0.1, "x" * 4096)


def test_job_logs_whose_disk_fills_say_once_they_stay_in_memory(state, caplog):
    small_tmpfs(state, "256k")
    store = open_beside(state / "journal.sqlite")
    assert store is not None
    try:
        fill(state)
        with caplog.at_level(logging.INFO):
            for n in range(1, 40):
                store.put("run", f"job-{n}", record(n))
                if n % 10 == 0:
                    assert store.flush(60), "the job-log writer"
        assert store.failed is not None  # it did meet the full disk
        said = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
        assert f"the disk of {state} is full" in said[0].getMessage(), caplog.text
        assert "kept in memory" in said[0].getMessage(), caplog.text
    finally:
        store.close()


@pytest.mark.parametrize("there", [False, True], ids=["new", "existing"])
def test_job_logs_opened_on_a_full_disk_say_the_disk_is_full(state, there, caplog):
    small_tmpfs(state, "256k")
    if there:
        made = open_beside(state / "journal.sqlite")
        assert made is not None
        made.close()
    fill(state)
    with caplog.at_level(logging.INFO):
        assert open_beside(state / "journal.sqlite") is None
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert f"the disk of {state} is full" in said[0].getMessage(), caplog.text
    assert "move the file away" not in caplog.text and "kept in memory" in caplog.text, caplog.text
