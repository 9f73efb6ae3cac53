"""The dashboard's other controls in headless Chromium, each checked through the API: the jobs table
filtered to failures with a log one click away, retry, priority, cancel, drain and undrain."""

from __future__ import annotations

from conftest import wait_for
from dashboard_helpers import (  # noqa: F401  (fixtures)
    Api,
    browser,
    click,
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


def test_failures_logs_retry_priority_cancel_drain_from_the_page(
        tmp_path, http_controller, start_agents, browser, synthetic):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    api = Api.of(http_controller.http)
    start_agents(http_controller.url, 1)
    agent = wait_for(lambda: [a["id"] for a in api.get("/api/v1/agents")["agents"]], 60, "the agent")[0]
    failing = synthetic(name="failing", jobs=6, fail=["job-0000002", "job-0000004"],
                        extra="[jobs]\nmax_attempts = 1\n")
    submit_in_background(http_controller.url, failing)[0].join(60)
    run = run_named(api, "failing")
    wait_for(lambda: api.project(run)["state"] == "failed", 30, "the failing run to end")
    open_project(browser, http_controller.http.dashboard_url, run)

    Select(browser.find_element(By.ID, "job-filter")).select_by_value("failed")
    rows = "return [...document.querySelectorAll('#jobs tr[data-key]')].map(r => r.dataset.key)"
    wait_for(lambda: js(browser, rows) == ["job-0000002", "job-0000004"], 30, "only the failures listed")
    click(browser, '#jobs tr[data-key="job-0000004"] button.show-log')
    log_text = "return document.getElementById('log-text').textContent"
    wait_for(lambda: "job-0000004 is set to fail" in js(browser, log_text), 30, "the failed job's log")
    shoot(browser, screenshot_dir(tmp_path), "dashboard-failures")

    click(browser, f'.project[data-id="{run}"] [data-action="retry"]')  # both fail again: 2 attempts each
    failed = f"/api/v1/projects/{run}/jobs?state=failed"
    wait_for(lambda: all(j["attempts"] == 2 for j in api.get(failed)["jobs"]), 60, "the failed jobs retried")

    click(browser, f'#agents tr[data-id="{agent}"] [data-action="drain"]')
    state = lambda: api.get("/api/v1/agents")["agents"][0]["state"]  # noqa: E731
    wait_for(lambda: state() == "draining", 30, "the agent draining (API)")
    waiting, _ = submit_in_background(http_controller.url, synthetic(name="waiting", jobs=3))
    other = run_named(api, "waiting")
    card = f'.project[data-id="{other}"]'
    wait_for(lambda: js(browser, "return !!document.querySelector(arguments[0])", card), 30,
             "the new run's card (from the event stream)")
    priority = browser.find_element(By.CSS_SELECTOR, f'.project[data-id="{other}"] input.priority')
    priority.clear()
    priority.send_keys("7")
    click(browser, f'.project[data-id="{other}"] [data-action="priority"]')
    wait_for(lambda: api.project(other)["priority"] == 7, 30, "the priority set (API)")
    assert api.project(other)["done"] == 0  # the only agent drains: nothing leased

    click(browser, f'.project[data-id="{other}"] [data-action="cancel"]')
    browser.switch_to.alert.accept()
    wait_for(lambda: api.project(other)["state"] == "cancelled", 30, "the run cancelled (API)")
    waiting.join(30)
    click(browser, f'#agents tr[data-id="{agent}"] [data-action="undrain"]')
    wait_for(lambda: state() == "active", 30, "the agent active (API)")
    assert console_errors(browser) == []


def test_the_embedded_farms_ui_address_opens_the_page_with_its_session_token(tmp_path, browser, synthetic):  # noqa: F811
    from farm.embedded import EmbeddedFarm
    from farm.project import load_project

    with EmbeddedFarm(tmp_path / "state", 1, ui=True) as farm:
        assert "access_token=" in farm.ui_url
        base = farm.ui_url.split("?")[0]
        assert Api(base).raw("/api/v1/projects")[0] == 401  # the API wants the token, also on loopback
        summary = farm.submit(load_project(synthetic(name="embedded", jobs=3)))
        assert summary.ok
        browser.get(farm.ui_url)
        wait_for(lambda: js(browser, "return document.querySelectorAll('.project').length") == 1, 30,
                 "the run's card (the API answered the page's token)")
        wait_for(lambda: js(browser, "return document.getElementById('live').textContent") == "live", 30,
                 "the event stream (with the page's token)")
        assert browser.get_cookies() == []  # a cookie of 127.0.0.1 would go to every port of it
        assert "access_token" not in browser.current_url  # taken out of the address bar (and screenshots)
        assert console_errors(browser) == []
