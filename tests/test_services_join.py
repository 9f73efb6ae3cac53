"""Joining under the agent's systemd unit: the join argument from the environment, no restart loop
when the join is refused (real `farm agent` processes)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT
from join_helpers import ENV

UNIT = ROOT / "packaging" / "systemd" / "farm-agent.service"


def _prevented() -> set[int]:
    codes: set[int] = set()
    for line in UNIT.read_text().splitlines():
        if line.startswith("RestartPreventExitStatus="):
            codes |= {int(c) for c in line.partition("=")[2].split() if c.isdigit()}
    return codes


def test_a_refused_join_exits_with_a_code_the_unit_does_not_restart(tmp_path):
    from farm.cli.agent import JOIN_REFUSED_EXIT

    assert JOIN_REFUSED_EXIT in _prevented() and JOIN_REFUSED_EXIT != 1  # 1: any other failure, restarted
    # $FARM_JOIN, as an EnvironmentFile sets it: read, checked, refused with a reason and that code
    done = subprocess.run([sys.executable, "-m", "farm", "agent", "--keys-dir", str(tmp_path / "keys")],
                          env={**ENV, "FARM_JOIN": "tcp://10.0.0.1:5555#not-a-key"}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == JOIN_REFUSED_EXIT, done.stderr
    assert "bad join argument" in done.stderr and "Traceback" not in done.stderr


def test_the_docs_say_how_to_join_under_the_units():
    services = (ROOT / "docs" / "services.md").read_text()
    for needle in ("FARM_JOIN", "--join-file", "RestartPreventExitStatus", "%%", "sudo -u farm FARM_KEYS="):
        assert needle in services, needle
