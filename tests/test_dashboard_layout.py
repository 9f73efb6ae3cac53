"""The dashboard's layout: wide content (a long filmstrip) scrolls inside its box, never the page."""

# ruff: noqa: F811  (pytest fixtures imported from the helpers are parameters of the tests)
from __future__ import annotations

from conftest import wait_for
from dashboard_helpers import browser, console_errors  # noqa: F401
from http_helpers import HttpFarm, start_http_farm, web  # noqa: F401  (fixture)


def test_a_long_filmstrip_scrolls_sideways_in_its_box_not_the_page(web, browser):
    browser.get(web.http.dashboard_url)
    wait_for(lambda: browser.find_element("id", "live").text == "live", 30, "the page loaded")
    # the frames preview's own markup (preview.js): 40 frames of 170 px each, far wider than the window
    browser.execute_script("""
        const detail = document.getElementById("detail"); detail.hidden = false;
        const strip = document.createElement("div"); strip.className = "strip";
        for (let i = 0; i < 40; i++) {
          const fig = document.createElement("figure"); const img = document.createElement("img");
          img.style.width = "170px"; fig.append(img); strip.append(fig);
        }
        document.getElementById("preview").append(strip);""")
    page = browser.execute_script("const d = document.documentElement; return [d.scrollWidth, d.clientWidth]")
    assert page[0] <= page[1], f"the page scrolls sideways: {page}"
    strip = browser.execute_script("const s = document.querySelector('.strip');"
                                   "return [s.scrollWidth, s.clientWidth]")
    assert strip[0] > strip[1]  # the strip itself scrolls
    assert console_errors(browser) == []
