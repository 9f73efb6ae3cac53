"""An agent killed and started again (same node, same ``--id``) showed "done 4" in `farm status` after
doing 10: its counters went with the dropped process. They count over the controller's life now,
across its node's restarts (`farm.controller.agentcounts`); the dashboard shows the same figures.

A real controller with its HTTP API, real agent processes (one killed with SIGKILL), a real browser.
"""

# ruff: noqa: F811  (pytest fixtures imported from the helpers are parameters of the tests)
from __future__ import annotations

import signal

from conftest import wait_for
from dashboard_helpers import browser, console_errors, js  # noqa: F401
from http_helpers import Submitted, web  # noqa: F401  (fixture)

from farm.cli.status import status_text


def test_a_restarted_nodes_counts_go_on_in_status_and_on_the_dashboard(web, browser, agents, synthetic):
    url = web.controller.url
    (first,) = agents(url, 1)  # --id agent-0: a node token, as `farm agent --id` keeps
    assert Submitted(url, synthetic(jobs=6, name="one")).result().ok
    first.send_signal(signal.SIGKILL)
    first.wait(60)
    wait_for(lambda: not len(web.controller.registry), 60, "the killed agent dropped")
    agents(url, 1, extra=["--id", "agent-0"])  # the same node started again (the last --id holds)
    wait_for(lambda: web.controller.registry.by_id("agent-0"), 60, "the node back")
    assert Submitted(url, synthetic(jobs=4, name="two")).result().ok

    (agent,) = web.controller.status()["agents"]
    assert (agent["id"], agent["done"], agent["failed"]) == ("agent-0", 10, 0), agent  # before: 4
    line = next(li for li in status_text(web.controller.status()).splitlines() if "agent-0" in li)
    assert "done 10 " in line, line
    (listed,) = web.get("/api/v1/agents").json()["agents"]
    assert (listed["done"], listed["failed"]) == (10, 0), listed

    browser.get(web.http.dashboard_url)
    texts = "return [...document.querySelectorAll(arguments[0])].map((c) => c.textContent)"
    cells = wait_for(lambda: js(browser, texts, '#agents tr[data-id="agent-0"] td'), 30, "the agent's row")
    headers = js(browser, texts, "table.agents th")
    shown = dict(zip(headers, cells, strict=False))
    assert (shown["done"], shown["failed"]) == ("10", "0"), shown
    assert console_errors(browser) == []
