"""`farm submit --ui` as a user ends it: Ctrl-C (SIGINT to its process group, as a terminal sends it)
after the run exits with the run's status; during the run, 130, and the agents stop quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import wait_for
from http_helpers import TIMEOUT


def _submit_ui(tmp_path: Path, project: Path, agents: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "FARM_KEYS"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    # a process group of its own, as a shell's foreground job: killpg is the terminal's Ctrl-C
    command = [sys.executable, "-P", "-m", "farm", "submit", str(project), "--agents", str(agents), "--ui"]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


def _ctrl_c(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        return proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.mark.parametrize("fail", [[], ["job-0000001"]], ids=["succeeded", "failed"])
def test_ctrl_c_after_the_run_exits_with_the_runs_status(tmp_path: Path, synthetic, fail: list[str]):
    proc = _submit_ui(tmp_path, synthetic(jobs=3, fail=fail, name="shown"), agents=1)
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:  # the run has ended once this is said
        said.append(line)
        if "stays up" in line:
            break
    if not (said and "press Ctrl-C to stop serving" in said[-1]):
        _ctrl_c(proc)
        raise AssertionError(f"no word that the run ended and how to stop serving: {said}")
    assert "the run has ended" in said[-1] and "http://127.0.0.1:" in said[-1], said
    assert "?access_token=" in said[-1]  # the address to open, as at the start
    out, err = _ctrl_c(proc)
    assert proc.returncode == (1 if fail else 0), err
    assert "interrupted" not in err and "Traceback" not in err, err
    assert ("1 failed" if fail else "3/3 jobs done") in out


def test_ctrl_c_during_the_run_is_130_and_stops_the_agents_quietly(tmp_path: Path, synthetic):
    proc = _submit_ui(tmp_path, synthetic(jobs=2, sleep=600, name="held"), agents=2)
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
        _ctrl_c(proc)
        raise
    out, err = _ctrl_c(proc)
    assert proc.returncode == 130, err
    assert "interrupted: 0 of " in err  # the total, if an UPDATE told it before the Ctrl-C
    # the farm stopping its own agents is no fault to report ("agent local-1 removed ...; 1 job requeued")
    assert "removed" not in err and "WARNING" not in err, err
