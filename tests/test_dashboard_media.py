"""The dashboard's frames and audio previews in headless Chromium, from real runs: a filmstrip of
Blender's frames, the waveform of the audio joined so far; no console errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import wait_for
from dashboard_helpers import Api, browser, console_errors, http_controller, js, open_project, screenshot_dir, shoot, start_agents  # noqa: F401
from test_audio_fast import make_project, make_source
from test_frames import blender, write_project  # noqa: F401

from farm.client import submit
from farm.project import load_project


def run_in_background(url: str, root: Path) -> tuple[threading.Thread, dict]:
    result: dict = {}
    project = load_project(root)
    thread = threading.Thread(target=lambda: result.update(summary=submit(url, project)), daemon=True)
    thread.start()
    return thread, result


def finished(api: Api, run: str) -> bool:
    return api.project(run)["state"] in ("done", "failed", "cancelled")


def run_id(api: Api, name: str) -> str:
    return wait_for(lambda: [p["id"] for p in api.get("/api/v1/projects")["projects"] if p["project"] == name],
                    30, f"the {name} run")[0]


def test_audio_waveform_is_drawn_from_the_joined_segments(tmp_path, http_controller, start_agents, browser):
    api = Api(http_controller.http.url)
    root = make_project(tmp_path / "audio", 'filters = "volume=0.5"\nsegment = 0.5\noutputs = ["flac"]\nname = "tone"\n')
    make_source(root / "source.wav", "0.8*sin(2*PI*220*t)*(t/3)", seconds=3.0)  # a rising tone
    thread, result = run_in_background(http_controller.url, root)
    run = run_id(api, "t")
    open_project(browser, http_controller.http.url, run)
    assert js(browser, "return document.getElementById('preview').dataset.kind") == "waveform"
    start_agents(http_controller.url, 1)
    thread.join(120)
    assert result["summary"].ok
    drawn = "return +(document.querySelector('#preview canvas') || {dataset: {}}).dataset.drawn || 0"
    wait_for(lambda: js(browser, drawn) > 500, 30, "the whole waveform drawn")  # of 600 peaks
    caption = js(browser, "return document.querySelector('#preview .caption').textContent")
    assert caption.startswith("3.0 s of 3.0 s"), caption
    shoot(browser, screenshot_dir(tmp_path), "dashboard-audio")
    assert console_errors(browser) == []


@pytest.mark.usefixtures("blender")
def test_frames_filmstrip_shows_the_latest_frames(tmp_path, http_controller, start_agents, browser):
    api = Api(http_controller.http.url)
    root = write_project(tmp_path / "frames", frames="1-4", frames_extra="chunk = 1\n")
    thread, result = run_in_background(http_controller.url, root)
    run = run_id(api, "tiny turntable")
    open_project(browser, http_controller.http.url, run)
    assert js(browser, "return document.getElementById('preview').dataset.kind") == "images"
    assert js(browser, "return document.querySelectorAll('#preview img.frame').length") == 0
    start_agents(http_controller.url, 1)
    thread.join(300)
    assert result["summary"].ok
    loaded = "return [...document.querySelectorAll('#preview img.farm-image-loaded')].filter(i => i.naturalWidth).length"
    wait_for(lambda: js(browser, loaded) == 4, 30, "four frames in the filmstrip")
    wait_for(lambda: js(browser, "const p = document.querySelector('#preview img.poster'); return p && p.naturalWidth"),
             30, "the contact sheet")
    shoot(browser, screenshot_dir(tmp_path), "dashboard-frames")
    assert console_errors(browser) == []
