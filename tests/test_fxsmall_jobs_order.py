"""`farm jobs` lists keys in natural order (numbers as numbers: ``5/0/8+4`` before ``5/0/16+4``),
and pages cut by offset and limit follow that order, for a live run and a journaled one.

A real SQLite journal as a killed controller left it, a real controller read through a real client.
"""

from __future__ import annotations

from test_fxtruth_resume import frames_project

from farm.client import Client
from farm.controller.server import JOURNAL_FILE, Controller
from farm.journal import Journal
from farm.project import load_project

KEYS = ["5/0/16+4", "5/0/8+4", "5/0/0+8", "5/10/0+4", "5/9/0+4", "5/0/100+1"]
NATURAL = ["5/0/0+8", "5/0/8+4", "5/0/16+4", "5/0/100+1", "5/9/0+4", "5/10/0+4"]


def test_jobs_are_listed_in_natural_order_page_by_page(tmp_path):
    project = load_project(frames_project(tmp_path / "p", "1-400"))
    state = tmp_path / "state"
    state.mkdir()
    with Journal(state / JOURNAL_FILE) as journal:
        journal.add_project("run-1", project.to_wire(), 0, 0.0)
        for key in KEYS:
            journal.job_done("run-1", key, None)
        journal.job_failed("run-1", "5/0/24+4", "boom", "", 1)
        journal.job_failed("run-1", "5/0/120+4", "boom", "", 1)
        journal.flush()
    url = f"ipc://{tmp_path}/ctl.sock"
    controller = Controller(url, state_dir=state, heartbeat=0.5, liveness=4).start()
    try:
        with Client(url) as client:
            whole = [j["key"] for j in client.jobs("run-1", "done")["jobs"]]
            pages = [j["key"] for offset in range(0, len(KEYS), 4)
                     for j in client.jobs("run-1", "done", offset=offset, limit=4)["jobs"]]
            failed = [j["key"] for j in client.jobs("run-1", "failed")["jobs"]]
    finally:
        controller.stop()
    assert whole == pages == NATURAL, (whole, pages)
    assert failed == ["5/0/24+4", "5/0/120+4"], failed
