"""The dashboard in headless Chromium: a map project's tiles fill in during a run, and the
page's buttons pause and resume it (checked through the API)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from conftest import ROOT, wait_for
from dashboard_helpers import (  # noqa: F401  (fixtures)
    Api,
    browser,
    click,
    console_errors,
    http_controller,
    js,
    open_project,
    screenshot_dir,
    shoot,
    start_agents,
)

from farm.client import Client, submit
from farm.project import load_project

LOADED = "return document.querySelectorAll('#preview img.farm-tile-loaded').length"
TILES = "return document.querySelectorAll('#preview img.leaflet-tile').length"

def small_world(tmp_path: Path, zoom: str = "0-3") -> Path:
    """The world_map sample with a few zooms and one tile per job: many small jobs."""
    folder = tmp_path / "world"
    shutil.copytree(ROOT / "sample_projects" / "world_map", folder,
                    ignore=shutil.ignore_patterns("output", ".farm*"))
    toml = (folder / "farm.toml").read_text()
    toml = toml.replace('zoom = "0-5"', f'zoom = "{zoom}"').replace("metatile = 8", "metatile = 1\nchunk = 1")
    (folder / "farm.toml").write_text(toml)
    return folder


def test_map_tiles_appear_and_buttons_pause_and_resume(tmp_path, http_controller, start_agents, browser):  # noqa: F811
    api = Api.of(http_controller.http)
    project = load_project(small_world(tmp_path))
    result = {}
    runner = threading.Thread(target=lambda: result.update(summary=submit(http_controller.url, project)),
                              daemon=True)
    runner.start()  # no agent yet: the run waits, so the page sees it from its first tile
    run = wait_for(lambda: [p["id"] for p in api.get("/api/v1/projects")["projects"]], 30, "the run")[0]
    shots = screenshot_dir(tmp_path)

    open_project(browser, http_controller.http.dashboard_url, run)
    wait_for(lambda: js(browser, TILES) > 0, 30, "the map's tiles")
    assert js(browser, LOADED) == 0  # nothing rendered yet: every tile is pending

    click(browser, f'.project[data-id="{run}"] [data-action="pause"]')
    wait_for(lambda: api.project(run)["paused"], 30, "the run to be paused (API)")
    wait_for(lambda: "paused" in js(browser, "return document.querySelector(arguments[0]).textContent",
                                    f'.project[data-id="{run}"] .state'), 30, "the card to say paused")
    start_agents(http_controller.url, 1)
    wait_for(lambda: [a for a in api.get("/api/v1/agents")["agents"]], 60, "the agent")
    assert api.project(run)["done"] == 0  # paused: nothing leased

    # A run of 85 small jobs can end within a second, before the page draws anything: pause it
    # again at its first job.done (from the event stream, within a loop turn or two), so the
    # tiles that appear can be seen to appear while most of the run is still to come.
    first_done = threading.Event()

    def pause_at_first_done() -> None:
        with Client(http_controller.url) as stream, Client(http_controller.url) as steer:
            for event in stream.events():
                if event["type"] == "job.done" and event["run"] == run:
                    steer.pause(run)
                    first_done.set()
                    return

    threading.Thread(target=pause_at_first_done, daemon=True).start()
    click(browser, f'.project[data-id="{run}"] [data-action="resume"]')
    assert first_done.wait(60), "no job was done after resuming"
    wait_for(lambda: api.project(run)["paused"] and not api.project(run)["running"], 30,
             "the run paused again, its jobs in flight done")
    wait_for(lambda: js(browser, LOADED) > 0, 30, "the first tiles on the map")
    done_then = api.project(run)["done"]
    assert 0 < done_then < 85 == api.project(run)["total"], done_then  # tiles shown mid-run

    click(browser, f'.project[data-id="{run}"] [data-action="resume"]')
    wait_for(lambda: not api.project(run)["paused"], 30, "the run to be resumed (API)")
    seen = [js(browser, LOADED)]  # loaded tiles, as they change

    def grown() -> bool:
        loaded = js(browser, LOADED)
        if seen[-1] != loaded:
            seen.append(loaded)
        return loaded >= js(browser, TILES)

    wait_for(grown, 120, "every tile in view to load")
    assert seen[-1] >= seen[0] > 0 and seen == sorted(seen), seen  # never fewer
    wait_for(lambda: js(browser, "return document.querySelectorAll('#agents tr[data-id]').length"), 30,
             "the agent in the agents table")
    shoot(browser, shots, "dashboard-map")
    runner.join(120)
    assert result["summary"].ok
    assert console_errors(browser) == []


def test_a_map_finished_before_a_restart_is_shown_without_console_errors(tmp_path, start_agents, browser):  # noqa: F811
    from http_helpers import start_http_farm

    state = tmp_path / "state"
    root = small_world(tmp_path, zoom="0-1")
    first = start_http_farm(state)
    try:
        start_agents(first.controller.url, 1)
        summary = submit(first.controller.url, load_project(root))
        assert summary.ok
    finally:
        first.controller.stop(shutdown_agents=True)
    second = start_http_farm(state)  # the run is the journal's now, its output folder still there
    try:
        open_project(browser, second.http.dashboard_url, summary.id)
        assert js(browser, "return document.getElementById('preview').dataset.kind") == "tiles"
        wait_for(lambda: js(browser, TILES) > 0 and js(browser, LOADED) >= js(browser, TILES), 30, "the tiles")
        shutil.rmtree(root / "output")
        # again: the page says the preview is not kept
        open_project(browser, second.http.dashboard_url, summary.id)
        wait_for(lambda: js(browser, "return document.getElementById('preview').dataset.kind") == "message",
                 30, "the message")
        assert "not there any more" in js(browser, "return document.getElementById('preview').textContent")
        assert console_errors(browser) == []
    finally:
        second.controller.stop(shutdown_agents=True)


def test_a_cancelled_maps_caption_promises_no_more_tiles(tmp_path, http_controller, browser):  # noqa: F811
    api = Api.of(http_controller.http)
    project = load_project(small_world(tmp_path, zoom="0-1"))
    runner = threading.Thread(target=lambda: submit(http_controller.url, project), daemon=True)
    runner.start()  # no agent: the run waits until it is cancelled
    run = wait_for(lambda: [p["id"] for p in api.get("/api/v1/projects")["projects"]], 30, "the run")[0]
    api.post(f"/api/v1/projects/{run}/cancel")
    wait_for(lambda: api.project(run)["state"] == "cancelled", 30, "the run to be cancelled")
    open_project(browser, http_controller.http.dashboard_url, run)
    caption = "return (document.querySelector('#preview .caption') || {}).textContent || ''"
    said = wait_for(lambda: "cancelled" in js(browser, caption) and js(browser, caption), 30, "the caption")
    assert "tiles appear" not in said and "collated before it ended" in said, said
    runner.join(60)
    assert console_errors(browser) == []
