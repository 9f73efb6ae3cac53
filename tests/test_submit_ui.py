"""`farm submit --ui` as a user ends it: Ctrl-C (SIGINT to its process group, as a terminal sends it)
after the run exits with the run's status; during the run, 130, and the agents stop quietly."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests
from conftest import wait_for
from http_helpers import TIMEOUT
from submit_ui_helpers import ended_by, submit_ui


@pytest.mark.parametrize("fail", [[], ["job-0000001"]], ids=["succeeded", "failed"])
def test_ctrl_c_after_the_run_exits_with_the_runs_status(tmp_path: Path, synthetic, fail: list[str]):
    proc = submit_ui(tmp_path, synthetic(jobs=3, fail=fail, name="shown"), agents=1)
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:  # the run has ended once this is said
        said.append(line)
        if "stays up" in line:
            break
    if not (said and "press Ctrl-C to stop serving" in said[-1]):
        ended_by(proc)
        raise AssertionError(f"no word that the run ended and how to stop serving: {said}")
    assert "the run has ended" in said[-1] and "http://127.0.0.1:" in said[-1], said
    assert "?access_token=" in said[-1]  # the address to open, as at the start
    out, err = ended_by(proc)
    assert proc.returncode == (1 if fail else 0), err
    assert "interrupted" not in err and "Traceback" not in err, err
    assert "stopped serving the dashboard" in err, err
    assert ("1 failed" if fail else "3/3 jobs done") in out


def test_ctrl_c_during_the_run_is_130_and_stops_the_agents_quietly(tmp_path: Path, synthetic):
    proc = submit_ui(tmp_path, synthetic(jobs=2, sleep=600, name="held"), agents=2)
    assert proc.stderr is not None
    try:
        url = next(line for line in proc.stderr if line.startswith("dashboard: ")).split(" ", 1)[1].strip()
        base, token = url.split("?")[0].rstrip("/"), url.split("access_token=", 1)[1]

        def running() -> int:
            answer = requests.get(base + "/api/v1/projects", headers={"Authorization": f"Bearer {token}"},
                                  timeout=TIMEOUT)
            return sum(p["running"] for p in answer.json()["projects"])

        wait_for(lambda: running() == 2, 120, "both agents to hold a job")  # its jobs sleep for minutes
    except BaseException:
        ended_by(proc)
        raise
    out, err = ended_by(proc)
    assert proc.returncode == 130, err
    assert "interrupted: 0 of " in err  # the total, if an UPDATE told it before the Ctrl-C
    # the farm stopping its own agents is no fault to report ("agent local-1 removed ...; 1 job requeued")
    assert "removed" not in err and "WARNING" not in err, err


def test_a_ctrl_c_as_soon_as_the_serving_is_said_still_ends_it(monkeypatch):
    """The user (or a script) reads "press Ctrl-C to stop serving" and presses it at once: the
    KeyboardInterrupt may land before the wait starts (CI saw the command end silently)."""
    from farm.cli import submit

    said: list[str] = []

    def echo(text: str, err: bool = False) -> None:
        said.append(text)
        if "stays up" in text:
            raise KeyboardInterrupt  # the Ctrl-C, delivered just after the line went out

    monkeypatch.setattr(submit.typer, "echo", echo)
    before = signal.getsignal(signal.SIGTERM)
    try:
        submit._serve_until_stopped("http://127.0.0.1:1/")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert said[-1] == "stopped serving the dashboard", said
