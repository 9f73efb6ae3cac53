"""Helpers for the dashboard tests: a controller serving its HTTP API, a headless Chromium, screenshots.

The browser is Debian's ``chromium`` driven through ``chromium-driver`` (Selenium). Without
them the browser tests skip, saying so, unless ``CI`` is set: there they must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote as _quote

import pytest
from conftest import IN_CI, wait_for

from farm.client import submit
from farm.controller.server import Controller
from farm.embedded import stop_agents
from farm.project import load_project

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def need_browser() -> None:
    """Skip (locally) or fail (in CI) when headless Chromium or its driver is missing."""
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        why = f"the dashboard's browser tests need {', '.join(missing)} (scripts/setup.sh installs them)"
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


def quote(path: str) -> str:
    """A path with its run ids' spaces and the like escaped (``%2F`` and ``..`` left as written)."""
    return _quote(path, safe="/%?=&")


class Api:
    """The controller's HTTP API as a test calls it (urllib: no client library in between)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    @classmethod
    def of(cls, http: Any) -> Api:
        """The API of an `HttpServer`, called with its session token (the owner's)."""
        return cls(http.url, http.access.session_token)

    def _request(self, path: str) -> urllib.request.Request:
        return urllib.request.Request(self.url + quote(path), headers=self.headers)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self._request(path), timeout=30) as response:
            return json.loads(response.read())

    def raw(self, path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(self._request(path), timeout=30) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()

    def post(self, path: str) -> int:
        request = urllib.request.Request(self.url + quote(path), data=b"{}", method="POST",
                                         headers={**self.headers, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status

    def project(self, run: str) -> dict[str, Any]:
        return self.get(f"/api/v1/projects/{run}")


@pytest.fixture
def http_controller(tmp_path: Path) -> Iterator[Controller]:
    """A controller on loopback TCP with its HTTP API on a free loopback port (its session token:
    `Api.of(ctl.http)`, `ctl.http.dashboard_url`)."""
    from farm.http.server import HttpServer

    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "controller-state", heartbeat=0.5, liveness=4,
                     http=HttpServer("127.0.0.1", 0))
    ctl.start()
    yield ctl
    ctl.stop(shutdown_agents=True)


@pytest.fixture
def start_agents() -> Iterator[Callable[..., list[subprocess.Popen[bytes]]]]:
    """start_agents(url, count): real agent processes, stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(url: str, count: int = 1) -> list[subprocess.Popen[bytes]]:
        for _ in range(count):
            cmd = [sys.executable, "-m", "farm", "--log-level", "warning", "agent", "--controller", url,
                   "--slots", "1", "--parent-pid", str(os.getpid()), "--id", f"agent-{len(started)}"]
            started.append(subprocess.Popen(cmd))
        return started[-count:]

    yield start
    stop_agents(started)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (Selenium) that keeps its console log for `console_errors`."""
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,860", "--force-device-scale-factor=1", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors (and failed loads) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``$FARM_SCREENSHOTS`` if set, else the test's own folder."""
    folder = Path(os.environ.get("FARM_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shoot(driver: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def open_project(driver: Any, url: str, run: str) -> None:
    """Load the dashboard (`url`: with its token, as `HttpServer.dashboard_url`) and choose the run."""
    driver.get(url)
    card = f'.project[data-id="{run}"]'
    wait_for(lambda: js(driver, "return !!document.querySelector(arguments[0])", card), 30, "its card")
    click(driver, f"{card} .name")
    wait_for(lambda: js(driver, "return document.getElementById('preview').dataset.kind"), 30, "the preview")


def click(driver: Any, selector: str) -> None:
    enabled = "const b = document.querySelector(arguments[0]); return b && !b.disabled"
    wait_for(lambda: js(driver, enabled, selector), 30, f"{selector} to be enabled")
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        try:  # a live update may replace the element between finding and clicking it: find it again
            driver.find_element(By.CSS_SELECTOR, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(clicked, 30, f"a click on {selector}")


def submit_in_background(url: str, root: Path) -> tuple[threading.Thread, dict[str, Any]]:
    """Submit the project in ``root`` and follow it in a thread; its summary lands in the dict."""
    result: dict[str, Any] = {}
    project = load_project(root)
    thread = threading.Thread(target=lambda: result.update(summary=submit(url, project)), daemon=True)
    thread.start()
    return thread, result


def run_named(api: Api, name: str) -> str:
    """The id of the newest run of the project ``name``, once the controller lists it."""
    def ids() -> list[str]:
        return [p["id"] for p in api.get("/api/v1/projects")["projects"] if p["project"] == name]

    return wait_for(ids, 30, f"the {name} run")[-1]
