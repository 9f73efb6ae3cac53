"""The systemd units in packaging/systemd: systemd accepts them, and farm accepts their command lines."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IN_CI, ROOT

UNITS = ROOT / "packaging" / "systemd"
SERVICES = {"controller": UNITS / "farm-controller.service", "agent": UNITS / "farm-agent.service"}


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


@pytest.fixture(scope="module")
def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        reason = "systemd-analyze is not installed (scripts/setup.sh installs systemd)"
        if IN_CI:
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    return found


def test_systemd_analyze_verify_passes_without_a_word(analyze):
    done = subprocess.run([analyze, "verify", *map(str, SERVICES.values())], capture_output=True, text=True,
                          timeout=120, check=False)
    # it exits 0 on unknown keys and bad values too, but says so: any word about our units fails
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "farm-" in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


def test_a_unit_with_a_typo_is_caught(analyze, tmp_path):
    """The check above can fail: the same run on a broken copy names the problems."""
    broken = tmp_path / "farm-agent.service"
    broken.write_text(SERVICES["agent"].read_text().replace("KillMode=control-group", "KillMode=cgroup")
                      .replace("Restart=on-failure", "Restrat=on-failure"))
    done = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert "kill mode" in done.stderr and "Restrat" in done.stderr


@pytest.mark.parametrize("role", sorted(SERVICES))
def test_units_run_as_farm_restart_on_failure_and_kill_the_whole_group(role):
    service = _unit(SERVICES[role])["Service"]
    assert service["User"] == service["Group"] == "farm"
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "control-group"  # workers and renderers stop with the agent
    assert service["StateDirectory"] == f"farm-{role}"
    environment = [line.partition("=")[2] for line in SERVICES[role].read_text().splitlines()
                   if line.startswith("Environment=")]  # a key that repeats: the parser keeps the last
    assert f"FARM_KEYS=%S/farm-{role}/keys" in environment  # keys live in the state folder
    if role == "agent":
        assert service["CacheDirectory"] == "farm-agent"
        assert "PrivateDevices" not in service  # GPU rendering needs /dev/dri, /dev/nvidia*
    sysusers = (UNITS / "farm.sysusers.conf").read_text()
    assert any(line.split()[:2] == ["u", "farm"] for line in sysusers.splitlines() if line and line[0] != "#")


@pytest.mark.parametrize("role", sorted(SERVICES))
def test_the_command_lines_are_ones_farm_accepts(role, tmp_path):
    exec_start = _unit(SERVICES[role])["Service"]["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[:2] == ["/usr/bin/env", "farm"] and argv[-1].startswith("$FARM_")
    specifiers = {"%S": str(tmp_path / "state"), "%C": str(tmp_path / "cache")}
    args = [specifiers.get(a[:2], "") + a[2:] if a[:2] in specifiers else a for a in argv[2:-1]]
    # --help after every option: farm parses them all (an unknown one exits 2) and starts nothing
    done = subprocess.run([sys.executable, "-m", "farm", *args, "--help"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert role in argv
