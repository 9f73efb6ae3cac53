"""Helpers for the tests that kill a controller mid-run and start it again on the same state."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from agent_trust_helpers import AgentTmp

from farm.client import Client
from farm.protocol import T


def follow_after_restart(start_controller: Callable[[], subprocess.Popen[bytes]], url: str, run_id: str,
                         jobs: int, agent_tmp: AgentTmp) -> list[str]:
    """Start the controller again (the agents reconnect by themselves), follow the run to its end,
    and stop it; asserts all `jobs` are done. Returns the keys the agents rendered, one per render
    (their ``renders.log``), with `agent_tmp` closed."""
    ctl = start_controller()
    try:
        with Client(url, timeout=60) as client:
            client.send(T.FOLLOW, {"project": run_id})
            summary = client.follow(run_id)
    finally:
        ctl.terminate()
        ctl.wait()
    assert summary.ok and summary.done == jobs, summary
    rendered = agent_tmp.lines("renders.log")
    agent_tmp.close()
    return rendered
