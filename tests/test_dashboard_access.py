"""Who may open the dashboard: the token in the page's address only (never an API URL's), kept by
the page in its own storage and never in a cookie, and a page refused by the API that says why
instead of showing empty lists."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import wait_for
from dashboard_helpers import browser, console_errors, screenshot_dir  # noqa: F401
from http_helpers import TIMEOUT, HttpFarm, Submitted, start_http_farm
from test_http_security import _outside

from farm.http.tokens import TokenStore


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[HttpFarm, str]]:
    """A controller beyond loopback (every request needs a token) and a valid token."""
    keys = tmp_path / "keys"
    token = TokenStore(keys).new("ci")
    web = start_http_farm(tmp_path / "state", "0.0.0.0", keys=keys, connect_host=_outside())
    yield web, token
    web.controller.stop()


def test_only_the_page_takes_a_token_in_its_address(guarded):
    web, token = guarded
    for path in ("/api/v1/projects", "/api/v1/agents", "/metrics", "/api/v1/events"):
        refused = requests.get(f"{web.base}{path}?access_token={token}", timeout=TIMEOUT)
        assert refused.status_code == 401, path
        assert "set-cookie" not in refused.headers, path
        assert "dashboard page" in refused.json()["error"]
    page = requests.get(f"{web.base}/?access_token={token}", timeout=TIMEOUT)
    assert page.status_code == 200 and "set-cookie" not in page.headers  # the page reads it itself
    refused = requests.get(web.base + "/api/v1/projects", cookies={"farm_token": token}, timeout=TIMEOUT)
    assert refused.status_code == 401 and refused.json()["error"].startswith("this API needs a token")
    # a cookie an earlier version set is expired by any answer: a browser sends it to every port
    assert refused.headers["set-cookie"] == "farm_token=; Max-Age=0; Path=/"
    page = requests.get(f"{web.base}/", cookies={"farm_token": token}, timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers["set-cookie"] == "farm_token=; Max-Age=0; Path=/"
    refused = requests.get(web.base + "/api/v1/projects", headers={"Authorization": "Bearer farm_wrong"},
                           timeout=TIMEOUT)
    assert refused.status_code == 401 and refused.json()["error"].startswith("invalid token")
    bare = requests.get(web.base + "/api/v1/projects", timeout=TIMEOUT)
    assert bare.json()["error"].startswith("this API needs a token")


@pytest.mark.parametrize("address", ["/?access_token=farm_wrong", "/"])
def test_a_refused_page_says_it_needs_a_valid_token(guarded, browser, address, tmp_path):  # noqa: F811
    web, _ = guarded
    browser.get(web.base + address)
    banner = wait_for(lambda: browser.find_element("id", "auth").is_displayed()
                      and browser.find_element("id", "auth").text, 30, "the banner")
    assert "?access_token=" in banner
    assert ("invalid" in banner) == ("access_token" in address), banner
    assert browser.find_element("id", "live").text == "no access"
    assert not browser.find_element("id", "projects").is_displayed()  # no "No projects yet."
    browser.save_screenshot(str(screenshot_dir(tmp_path) / "denied.png"))
    console_errors(browser)  # the 401s themselves are logged by the browser


def test_a_page_opened_with_a_valid_token_works_and_forgets_it(guarded, browser):  # noqa: F811
    web, token = guarded
    browser.get(f"{web.base}/?access_token={token}")
    wait_for(lambda: browser.find_element("id", "live").text == "live", 30, "the event stream")
    assert "access_token" not in browser.current_url
    assert not browser.find_element("id", "auth").is_displayed()
    assert console_errors(browser) == []


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Another local user's server on another port of 127.0.0.1: keeps the headers it is sent."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802
        _Recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<!doctype html><title>elsewhere</title>")

    def log_message(self, *args: object) -> None:
        pass


def test_the_token_never_reaches_another_port_and_live_updates_still_arrive(tmp_path, browser, synthetic):  # noqa: F811
    token = "farm_session_of_the_owner_0123456789"
    web = start_http_farm(tmp_path / "state", session_token=token)
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        browser.get(f"{web.base}/?access_token={token}")
        wait_for(lambda: browser.find_element("id", "live").text == "live", 30, "the event stream")
        assert browser.get_cookies() == []  # a cookie of 127.0.0.1 would go to every port of it
        Submitted(web.controller.url, synthetic(jobs=2, name="later"))  # after the page opened; no agent
        wait_for(lambda: browser.execute_script("return document.querySelectorAll('.project').length") == 1,
                 30, "the new run's card (from the event stream)")
        browser.get(f"http://127.0.0.1:{other.server_address[1]}/")
        assert _Recorder.seen and not any(token in value for h in _Recorder.seen for value in h.values())
        assert "cookie" not in _Recorder.seen[-1]
        browser.back()  # the same tab: its own storage still holds the token, the address does not
        wait_for(lambda: browser.find_element("id", "live").text == "live", 30, "the event stream again")
        assert "access_token" not in browser.current_url and browser.get_cookies() == []
        assert console_errors(browser) == []
    finally:
        other.shutdown()
        other.server_close()
        web.controller.stop(shutdown_agents=True)
