"""A journal file made as an older farm wrote it, for the tests that open one."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def to_schema_1(db: sqlite3.Connection) -> None:
    """Turn a schema 2 journal without groups (every write committed, none through the writer thread's
    groups) into the schema 1 file an older farm wrote: its job rows the table ``jobs``."""
    if db.execute("SELECT count(*) FROM done_groups").fetchone()[0]:
        raise AssertionError("the journal has grouped jobs, which schema 1 cannot hold")
    db.execute("DROP VIEW jobs")
    db.execute("DROP TABLE done_groups")
    db.execute("ALTER TABLE job_rows RENAME TO jobs")
    db.execute("PRAGMA user_version = 1")


def stopped_run(state: Path, project: Any, done: list[str], run_id: str = "run-1") -> Path:
    """A state folder's journal as a controller stopped mid-run left it: `project`'s run `run_id`
    unfinished, the jobs of `done` done (no result). Returns `state`."""
    from farm.controller.server import JOURNAL_FILE
    from farm.journal import Journal

    state.mkdir(parents=True, exist_ok=True)
    with Journal(state / JOURNAL_FILE) as journal:
        journal.add_project(run_id, project.to_wire(), 0, 0.0)
        for key in done:
            journal.job_done(run_id, key, None)
        journal.flush()
    return state


@contextmanager
def resumed(state: Path, url: str, agents: Any, run_id: str = "run-1") -> Iterator[Any]:
    """A controller started on `state` at `url` (it resumes `run_id`) with one agent (the `agents`
    fixture); yields a client following the run; the controller and agent stop after."""
    from farm.client import Client
    from farm.controller.server import Controller
    from farm.protocol import T

    controller = Controller(url, state_dir=state, heartbeat=0.5, liveness=4).start()
    try:
        agents(url, 1)
        with Client(url, timeout=60) as client:
            client.send(T.FOLLOW, {"project": run_id})
            yield client
    finally:
        controller.stop(shutdown_agents=True)
