"""The run cards and the jobs pager in headless Chromium: numbers as the CLI prints them, no
controls that the controller would refuse on a finished run, and queued jobs not split off yet."""

# ruff: noqa: F811  (pytest fixtures imported from the helpers are parameters of the tests)
from __future__ import annotations

import re

from conftest import wait_for
from dashboard_helpers import browser, console_errors, js  # noqa: F401
from http_helpers import HttpFarm, Submitted, start_http_farm, web  # noqa: F401  (fixture)


def _facts(browser, run: str) -> str:
    return js(browser, "const c = document.querySelector(`.project[data-id='${arguments[0]}'] .facts`);"
                       "return c ? c.textContent : ''", run)


def test_a_big_queued_run_counts_with_separators_and_its_unsplit_jobs(web, browser, synthetic):
    Submitted(web.controller.url, synthetic(jobs=1500, name="big"))  # no agent: nothing is split off yet
    run = wait_for(lambda: [p["id"] for p in web.get("/api/v1/projects").json()["projects"] if p["total"]],
                   30, "the run")[0]
    browser.get(web.http.dashboard_url)
    wait_for(lambda: _facts(browser, run).startswith("0 / 1,500 jobs"), 30, "the card's counts")
    js(browser, "document.querySelector(`.project[data-id='${arguments[0]}'] .name`).click()", run)
    unlisted = web.get(f"/api/v1/projects/{run}/jobs").json()["unlisted"]
    assert unlisted > 0
    text = f"{unlisted:,} more not yet split"
    wait_for(lambda: text in js(browser, "return document.getElementById('jobs').textContent"), 30,
             "the jobs not split off yet, counted")
    js(browser, "const f = document.getElementById('job-filter'); f.value = 'queued';"
                "f.dispatchEvent(new Event('change'))")
    wait_for(lambda: text in js(browser, "return document.getElementById('jobs').textContent"), 30,
             "the queued filter counting them too")
    assert console_errors(browser) == []


def test_a_finished_run_offers_no_controls_and_rates_have_one_decimal(
        web, browser, agents, synthetic, tmp_path):
    agents(web.controller.url, 1, extra=["--cache-dir", str(tmp_path / "cache")])
    summary = Submitted(web.controller.url, synthetic(jobs=30, sleep=0.02, name="over")).result()
    assert summary.ok
    browser.get(web.http.dashboard_url)
    wait_for(lambda: "30 / 30 jobs" in _facts(browser, summary.id), 30, "the card")
    controls = js(browser, "return [...document.querySelectorAll(`.project[data-id='${arguments[0]}'] "
                           ".controls button, .project[data-id='${arguments[0]}'] .controls input`)]"
                           ".map(e => [e.dataset.action || 'input', e.disabled])", summary.id)
    assert dict(controls) == {"pause": True, "resume": True, "cancel": True, "retry": True, "priority": True,
                              "input": True}
    # the run's id tells it from other runs of the project (a resubmit is a run of the same name)
    assert js(browser, "return document.querySelector(`.project[data-id='${arguments[0]}'] .run`).textContent",
              summary.id) == summary.id
    facts = _facts(browser, summary.id)
    rates = re.findall(r"([\d,.]+) (jobs|items)/s", facts)
    assert rates and all(re.fullmatch(r"[\d,]+\.\d", r) for r, _ in rates), facts
    # one rate, in the media's own units (items here), not again in jobs/s
    assert [unit for _, unit in rates] == ["items"], facts
    assert console_errors(browser) == []


def _bar(browser, run: str) -> dict[str, float]:
    widths = js(browser, "const c = document.querySelector(`.project[data-id='${arguments[0]}']`);"
                         "return c ? Object.fromEntries(['done', 'partial', 'failed'].map("
                         "k => [k, c.querySelector('.bar .' + k).style.width])) : {}", run)
    return {k: float(v.rstrip("%") or 0) for k, v in widths.items()}


def test_the_bar_is_drawn_in_the_medias_units_not_jobs(web, browser, agents, synthetic):
    """Jobs of unequal size: 3 of 4 jobs done is 3 of 13 items, the failed job 10 of them. Before,
    the bar drew jobs (75% done, 25% failed) while the card said 3 / 13 items."""
    agents(web.controller.url, 1)
    summary = Submitted(web.controller.url, synthetic(jobs=4, units_per_job=[1, 1, 10, 1],
                                                      fail=["job-0000002"])).result()
    assert not summary.ok and summary.done == 3 and summary.failed == 1, summary
    browser.get(web.http.dashboard_url)
    wait_for(lambda: _bar(browser, summary.id).get("failed"), 30, "the card's bar")
    bar = _bar(browser, summary.id)
    assert abs(bar["done"] - 100 * 3 / 13) < 0.1 and abs(bar["failed"] - 100 * 10 / 13) < 0.1, bar
    assert js(browser, "return document.querySelector(`.project[data-id='${arguments[0]}'] .bar`)"
                       ".getAttribute('aria-valuenow')", summary.id) == "23"
    assert "3 / 13 items" in _facts(browser, summary.id)
    assert console_errors(browser) == []
