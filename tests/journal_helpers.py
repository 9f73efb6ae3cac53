"""A journal file made as an older farm wrote it, for the tests that open one."""

from __future__ import annotations

import sqlite3


def to_schema_1(db: sqlite3.Connection) -> None:
    """Turn a schema 2 journal without groups (every write committed, none through the writer thread's
    groups) into the schema 1 file an older farm wrote: its job rows the table ``jobs``."""
    if db.execute("SELECT count(*) FROM done_groups").fetchone()[0]:
        raise AssertionError("the journal has grouped jobs, which schema 1 cannot hold")
    db.execute("DROP VIEW jobs")
    db.execute("DROP TABLE done_groups")
    db.execute("ALTER TABLE job_rows RENAME TO jobs")
    db.execute("PRAGMA user_version = 1")
