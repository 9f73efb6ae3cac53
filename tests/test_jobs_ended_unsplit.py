"""A run that ended before its media type split every job off: those jobs never will be done, and
`farm jobs` and the API say so instead of "not split off yet" (a fresh user read it as work to come)."""

# ruff: noqa: F811  (pytest fixtures imported from the helpers are parameters of the tests)
from __future__ import annotations

from conftest import wait_for
from dashboard_helpers import browser, console_errors, js  # noqa: F401
from http_helpers import Submitted, web  # noqa: F401  (fixture)

from farm.cli.jobs import jobs_text


def test_a_cancelled_runs_unsplit_jobs_are_said_never_to_run(web, browser, synthetic):
    submitted = Submitted(web.controller.url, synthetic(jobs=1500, name="big"))  # no agent: none split off
    run = wait_for(lambda: [p["id"] for p in web.get("/api/v1/projects").json()["projects"] if p["total"]],
                   30, "the run")[0]
    page = web.get(f"/api/v1/projects/{run}/jobs").json()
    assert page["unlisted"] > 0 and page["ended"] is False, page
    assert "not split off yet" in jobs_text(page)
    assert web.post(f"/api/v1/projects/{run}/cancel", {}).status_code == 200
    assert submitted.result().state == "cancelled"
    page = web.get(f"/api/v1/projects/{run}/jobs").json()
    assert page["unlisted"] > 0 and page["ended"] is True, page
    text = jobs_text(page)
    assert f"{page['unlisted']:,} jobs not done: the run ended" in text and "yet" not in text, text
    browser.get(web.http.dashboard_url)
    card = "return !!document.querySelector(`.project[data-id='${arguments[0]}'] .name`)"
    wait_for(lambda: js(browser, card, run), 30, "the run's card")
    js(browser, "document.querySelector(`.project[data-id='${arguments[0]}'] .name`).click()", run)
    wait_for(lambda: f"{page['unlisted']:,} more not done: the run ended"
             in js(browser, "return document.getElementById('jobs').textContent"), 30, "the page saying so")
    assert console_errors(browser) == []
