"""The journal's job rows written as `farm.journalschema.UPSERT` writes them one at a time, at a
third of the cost (`farm.sqlrows`: a batch's rows by shape, their NULLs literal, many a statement),
and a batch's plain successes a group a row (`write_groups`, schema 2's ``done_groups``).

The rows of one batch name distinct jobs (the batch is keyed by job), so writing them by shape
rather than in the batch's order leaves the same table.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter

from farm.journalschema import GROUP_INSERT, UPSERT, Row
from farm.sqlrows import RowWriter

_HEAD, _CONFLICT = UPSERT.split("VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
assert _CONFLICT.lstrip().startswith("ON CONFLICT"), "farm.journalschema.UPSERT changed its shape"
#: lease, agent, result, cache_key, error, log, attempts, duration: the columns that may be NULL
_WRITER = RowWriter(_HEAD, _CONFLICT, 13, (3, 4, 5, 6, 7, 8, 9, 12),
                    lambda r: (r[3] is None, r[4] is None, r[5] is None, r[6] is None, r[7] is None,
                               r[8] is None, r[9] is None, r[12] is None))
_AGENT, _LEASE, _ATTEMPTS, _TIME = itemgetter(4), itemgetter(3), itemgetter(9), itemgetter(10)
_NONE = {None}
_plain_text = re.compile(r'[^"\\\x00-\x1f\x7f-\x9f\u2028\u2029]*').fullmatch  # JSON as it is, no escapes
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _pairs(keys: list[str], leases: list[str]) -> str:
    """The JSON text of [[key, lease], ...]: joined, where no character needs an escape (a key as
    `farm.keycheck` finds most, a lease id), else encoded."""
    if _plain_text("".join(keys)) and _plain_text("".join(leases)):
        return '[["' + '"],["'.join(map('","'.join, zip(keys, leases))) + '"]]'
    return _json(list(zip(keys, leases)))


#: jobs recorded done together (`Journal.jobs_done`): project_id, updated_at, keys
Done = tuple[str, float, list[str]]


def write_rows(db: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Upsert job rows (tuples of the `Row` layout, each naming a distinct job) into ``job_rows``, in
    the open transaction: what ``db.executemany(UPSERT, rows)`` does. Raises `sqlite3.Error`."""
    _WRITER.write(db, rows, ordered=False)


def write_groups(db: sqlite3.Connection, batch: dict[tuple[str, str], Row], done: list[Done]) -> set[str]:
    """Write a batch (job -> its row) in the open transaction: of each `done` entry, the jobs whose row
    is still the row that call made (its time) with the lease and agent of a start in this batch and
    no attempts before, one ``done_groups`` row per agent; every other
    row as `write_rows`. ``batch`` is left as it was. Returns the projects given groups. Raises
    `sqlite3.Error`."""
    rows = dict(batch)
    groups: list[tuple[str, str, float, str]] = []
    for project_id, now, keys in done:
        picked = list(map(rows.pop, zip(repeat(project_id), keys), repeat(None)))
        # a row of that call has its time (job times only increase), so it is done, without a result,
        # a cache key or reuse; a start in this batch gave it a lease and an agent
        if None not in picked and set(map(_TIME, picked)) == {now} and set(map(_ATTEMPTS, picked)) == _NONE:
            leases = list(map(_LEASE, picked))
            agents = set(map(_AGENT, picked))
            if None not in leases and len(agents) == 1 and None not in agents:
                groups.append((project_id, agents.pop(), now, _pairs(keys, leases)))
                continue
        by_agent: dict[str, list[Row]] = {}  # some started in an earlier batch, or changed since
        for row in picked:
            if row is None:
                continue
            if row[10] == now and row[3] is not None and row[4] is not None and row[9] is None:
                by_agent.setdefault(row[4], []).append(row)
            else:
                rows[project_id, row[1]] = row
        groups += [(project_id, agent, now, _pairs([r[1] for r in part], [r[3] for r in part]))
                   for agent, part in by_agent.items()]
    if rows:
        _WRITER.write(db, list(rows.values()), ordered=False)
    if groups:
        db.executemany(GROUP_INSERT, groups)
    return {group[0] for group in groups}
