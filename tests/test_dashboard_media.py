"""The dashboard's frames and audio previews in headless Chromium, from real runs: a filmstrip of
Blender's frames, the waveform of the audio joined so far; no console errors."""

from __future__ import annotations

import pytest
from conftest import wait_for
from dashboard_helpers import (  # noqa: F401  (fixtures)
    Api,
    browser,
    console_errors,
    http_controller,
    js,
    open_project,
    run_named,
    screenshot_dir,
    shoot,
    start_agents,
    submit_in_background,
)
from test_audio_fast import make_project, make_source
from test_frames import blender, write_project  # noqa: F401


def test_audio_waveform_is_drawn_from_the_joined_segments(tmp_path, http_controller, start_agents, browser):  # noqa: F811
    api = Api.of(http_controller.http)
    table = 'filters = "volume=0.5"\nsegment = 0.5\noutputs = ["flac"]\nname = "tone"\n'
    root = make_project(tmp_path / "audio", table)
    make_source(root / "source.wav", "0.8*sin(2*PI*220*t)*(t/3)", seconds=3.0)  # a rising tone
    thread, result = submit_in_background(http_controller.url, root)
    run = run_named(api, "t")
    open_project(browser, http_controller.http.dashboard_url, run)
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
def test_frames_filmstrip_shows_the_latest_frames(tmp_path, http_controller, start_agents, browser):  # noqa: F811
    api = Api.of(http_controller.http)
    root = write_project(tmp_path / "frames", frames="1-4", frames_extra="chunk = 1\n")
    thread, result = submit_in_background(http_controller.url, root)
    run = run_named(api, "tiny turntable")
    open_project(browser, http_controller.http.dashboard_url, run)
    assert js(browser, "return document.getElementById('preview').dataset.kind") == "images"
    assert js(browser, "return document.querySelectorAll('#preview img.frame').length") == 0
    start_agents(http_controller.url, 1)
    thread.join(300)
    assert result["summary"].ok
    loaded = ("return [...document.querySelectorAll('#preview img.farm-image-loaded')]"
              ".filter(i => i.naturalWidth).length")
    wait_for(lambda: js(browser, loaded) == 4, 30, "four frames in the filmstrip")
    poster = "const p = document.querySelector('#preview img.poster'); return p && p.naturalWidth"
    wait_for(lambda: js(browser, poster), 30, "the contact sheet")
    shoot(browser, screenshot_dir(tmp_path), "dashboard-frames")
    assert console_errors(browser) == []
