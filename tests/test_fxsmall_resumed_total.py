"""A run with adaptive chunks resumed after a controller restart, before any agent pulls, counts
the jobs left at the size its timing had chosen (the jobs done before have it), not at the
type's default chunk: before, "3/~40 done" (400 frames at 10 a job) for a run of about 17
jobs, until an agent joined.

A real SQLite journal as a killed controller left it, a real controller read through a real client.
"""

from __future__ import annotations

from test_fxtruth_resume import frames_project, seeded

from farm.client import Client
from farm.controller.server import Controller
from farm.project import load_project


def test_a_resumed_adaptive_run_estimates_its_jobs_at_the_sizes_chosen_before(tmp_path):
    project = load_project(frames_project(tmp_path / "p", "1-400"))
    seeded(tmp_path / "state", project, [(1, 24), (25, 48), (49, 72)])  # chunks of 24 frames
    url = f"ipc://{tmp_path}/ctl.sock"
    controller = Controller(url, state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    try:
        with Client(url) as client:
            snap = client.project("run-1")
    finally:
        controller.stop()
    assert snap["stalled"] == "no agents connected yet", snap
    assert (snap["done"], snap["total_estimated"]) == (3, True), snap
    # 3 done, the 328 frames left at 24 a job (14), and the count may have cut the next job at
    # the default 10 frames before it stopped (15); main said 40
    assert 3 + 14 <= snap["total"] <= 3 + 15, snap
