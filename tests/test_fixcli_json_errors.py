"""Every command that takes --json prints exactly one JSON object, errors included, with the
``{"error", "state", "code"}`` fields the README shows; `farm cancel --json` too (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from conftest import wait_for

from farm.client import Client
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]
NOBODY = "tcp://127.0.0.1:47999"  # nothing listens here

# every command with --json that talks to a controller
CONTROLLER_COMMANDS = [("status",), ("cancel", "run"), ("pause", "run"), ("resume", "run"), ("retry", "run"),
                       ("priority", "run", "3"), ("drain", "a"), ("undrain", "a"), ("logs", "run", "job"),
                       ("events", "--limit", "1")]


def one_object(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=120, env=env)
    (line,) = done.stdout.strip().splitlines()  # exactly one object: no text around it
    return done.returncode, json.loads(line), done.stderr


@pytest.mark.parametrize("command", CONTROLLER_COMMANDS, ids=[c[0] for c in CONTROLLER_COMMANDS])
def test_an_unreachable_controller_is_one_object_with_a_code(command):
    rc, obj, stderr = one_object(*command, "--json", "--controller", NOBODY)
    assert rc == 1
    assert set(obj) == {"error", "state", "code"} and obj["state"] == "failed" and obj["code"] == "unreachable"
    assert obj["error"].startswith(f"no answer from the controller at {NOBODY}")
    assert "error" not in stderr, stderr  # no second copy as text


def test_keys_we_cannot_read_and_no_keys_are_json_errors_too(tmp_path):
    rc, obj, _ = one_object("keys", "invite", "--json", "--keys-dir", str(tmp_path / "none"), "--url", NOBODY)
    assert rc == 1 and obj["code"] == "security" and set(obj) == {"error", "state", "code"}
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **{k: v for k, v in __import__("os").environ.items()
                                                                if k.startswith("PYTHON")}}
    rc, obj, _ = one_object("status", "--json", env=env)  # no controller named, none of ours here
    assert rc == 1 and obj["code"] == "unreachable" and "no controller named" in obj["error"]


def test_farm_cancel_json_prints_the_summary_or_the_refusal(controller, agents, synthetic):
    agents(controller.url, 1)
    with Client(controller.url) as client:
        run = client.submit(load_project(synthetic(jobs=40, sleep=0.2, name="cancelled")))
        wait_for(lambda: client.project(run)["done"] >= 1, 60, "some progress")
    rc, cancelled, _ = one_object("cancel", run, "--json", "--controller", controller.url)
    assert rc == 0 and cancelled["id"] == run and cancelled["state"] == "cancelled"
    assert cancelled["already"] is False and cancelled["jobs"]["done"] >= 1
    rc, again, stderr = one_object("cancel", run, "--json", "--controller", controller.url)
    assert rc == 0 and again["already"] is True and "nothing to cancel" not in stderr
    rc, missing, _ = one_object("cancel", "no-such-run", "--json", "--controller", controller.url)
    assert rc == 1 and set(missing) == {"error", "state", "code"} and "no-such-run" in missing["error"]
    assert missing["code"] == "not_found"  # as the steering commands say it


@pytest.mark.parametrize(("args", "named"), [
    (("priority", "run", "high"), "'value'"), (("jobs", "run", "--limit", "0"), "'--limit'"),
    (("status", "--bogus"), "No such option: --bogus"), (("submit", "--agents", "0", "."), "'--agents'")])
def test_a_usage_error_is_one_object_too(args, named):
    """A bad option or value: one object naming it, with code usage and exit 2, not click's usage box."""
    code, reply, stderr = one_object(*args, "--json")
    assert code == 2 and reply["code"] == "usage" and reply["state"] == "failed", (reply, stderr)
    assert named in reply["error"], reply
