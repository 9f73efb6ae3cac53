"""Finished runs outlive a controller restart: the API, `farm status` and `farm cancel NAME`
still answer for them from the journal (read-only)."""

from __future__ import annotations

import shutil

from conftest import wait_for
from http_helpers import Submitted, start_http_farm
from test_dashboard_map import small_world

from farm.client import Client


def test_finished_runs_are_still_answered_for_after_a_restart(tmp_path, agents, synthetic):
    state = tmp_path / "state"
    first = start_http_farm(state)
    try:
        agents(first.controller.url, 1, extra=["--cache-dir", str(tmp_path / "cache")])
        failed = Submitted(first.controller.url, synthetic(jobs=6, fail=["job-0000002"], name="mixed",
                                                           extra="[jobs]\nmax_attempts = 1\n")).result()
        done = Submitted(first.controller.url, synthetic(jobs=4, name="clean")).result()
        assert done.ok and failed.failed == 1
        before = {p["id"]: p for p in first.get("/api/v1/projects").json()["projects"]}
    finally:
        first.controller.stop(shutdown_agents=True)

    second = start_http_farm(state)
    try:
        listed = {p["id"]: p for p in second.get("/api/v1/projects").json()["projects"]}
        assert list(listed) == [failed.id, done.id]  # oldest first, as before
        for run in (failed, done):
            snap = second.get(f"/api/v1/projects/{run.project}").json()  # by name too
            assert snap["id"] == run.id and snap["journaled"] is True
            for field in ("state", "total", "done", "failed", "reused", "media_type", "project", "priority"):
                assert snap[field] == before[run.id][field] == listed[run.id][field], field
            assert snap["units"]["done"] == before[run.id]["units"]["done"]
        assert second.get(f"/api/v1/projects/{failed.id}").json()["failures"][0]["key"] == "job-0000002"
        page = second.get(f"/api/v1/projects/{failed.id}/jobs").json()
        assert page["total"] == 6 and page["unlisted"] == 0
        assert [j["state"] for j in page["jobs"]] == ["failed"] + ["done"] * 5
        refused = second.post(f"/api/v1/projects/{failed.id}/retry")
        assert refused.status_code == 409 and "finished before" in refused.json()["error"]
        log = second.get(f"/api/v1/projects/{failed.id}/jobs/job-0000002/log")
        assert log.status_code == 200  # job logs are kept on disk beside the journal
        assert [a["state"] for a in log.json()["attempts"]] == ["failed"]
        assert "is set to fail" in log.json()["attempts"][0]["log"]
        with Client(second.controller.url) as client:
            assert {p["id"] for p in client.status()["projects"]} == {failed.id, done.id}
            summary = client.cancel("clean")  # `farm cancel NAME --download` asks this first
            assert summary.already and summary.id == done.id and summary.state == "done"
        assert second.get("/api/v1/projects/nothing").status_code == 404
        for ref in (done.id, "mixed"):  # a run the API lists has a preview, never a 404 (synthetic: none)
            preview = second.get(f"/api/v1/projects/{ref}/preview")
            assert preview.status_code == 200 and preview.json() == {"kind": "none"}, preview.text
        assert second.get("/api/v1/projects/nothing/preview").status_code == 404
        # runs of this controller come after them, and finished ones still count to 50 in all
        agents(second.controller.url, 1, extra=["--cache-dir", str(tmp_path / "cache")])
        again = Submitted(second.controller.url, synthetic(jobs=2, name="after")).result()
        ids = [p["id"] for p in second.get("/api/v1/projects").json()["projects"]]
        assert ids == [failed.id, done.id, again.id]
        wait_for(lambda: second.get(f"/api/v1/projects/{again.id}").json()["state"] == "done", 30, "done")
    finally:
        second.controller.stop(shutdown_agents=True)


def test_a_finished_runs_preview_outlives_a_restart_while_its_output_does(tmp_path, agents):
    state = tmp_path / "state"
    root = small_world(tmp_path, zoom="0-1")
    first = start_http_farm(state)
    try:
        agents(first.controller.url, 1, extra=["--cache-dir", str(tmp_path / "cache")])
        run = Submitted(first.controller.url, root).result()
        assert run.ok
        before = first.get(f"/api/v1/projects/{run.id}/preview").json()
    finally:
        first.controller.stop(shutdown_agents=True)

    second = start_http_farm(state)
    try:
        assert before["kind"] == "tiles"
        for ref in ("world_map", run.id):  # by name first: the journal is read by that very request
            preview = second.get(f"/api/v1/projects/{ref}/preview")
            assert preview.status_code == 200 and preview.json() == before, preview.text
        tile = second.get("/api/v1/projects/world_map/tiles/0/0/0.png")
        assert tile.status_code == 200 and tile.content == (root / "output/tiles/0/0/0.png").read_bytes()
        shutil.rmtree(root / "output")  # nothing left to preview: said so, and still no 404 for the run
        gone = second.get("/api/v1/projects/world_map/preview")
        assert gone.status_code == 200 and gone.json()["kind"] == "message", gone.text
        assert "output folder is not there" in gone.json()["text"]
        tile = second.get(f"/api/v1/projects/{run.id}/tiles/0/0/0.png")
        assert tile.status_code == 404 and "no tile 0/0/0" in tile.json()["error"]
    finally:
        second.controller.stop(shutdown_agents=True)
