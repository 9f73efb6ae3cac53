"""Every client command finds this user's own controller without --controller, as `farm status`
does (real `farm controller`, agent and client processes). The steering commands and `farm
events` used to dial tcp://127.0.0.1:5555 whatever port the controller had."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_helpers import FARM, cli_controller


def farm(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_steering_commands_reach_the_users_controller_on_its_own_port(tmp_path: Path) -> None:
    with cli_controller(tmp_path) as ctl:  # port 0: anything but 5555
        assert not ctl.url.endswith(":5555")
        for args in (["pause", "nosuch"], ["retry", "nosuch"], ["priority", "nosuch", "3"],
                     ["drain", "nobody"], ["logs", "nosuch", "job-0000000"]):
            done = farm(ctl.env, *args, "--json")
            reply = json.loads(done.stdout)  # one object: the controller's answer, not "no answer"
            assert done.returncode == 1 and reply["code"] == "not_found", (args, done.stdout, done.stderr)


def test_events_reach_the_users_controller_on_its_own_port(tmp_path: Path) -> None:
    with cli_controller(tmp_path) as ctl:
        agent = subprocess.Popen([*FARM, "agent", "--controller", ctl.url, "--slots", "1", "--id", "finder"], env=ctl.env)
        try:
            done = farm(ctl.env, "events", "--since", "0", "--limit", "1", "--json", timeout=120)
        finally:
            agent.terminate()
            agent.wait(30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["seq"] >= 1


def test_controller_auto_falls_back_to_the_users_own_controller(tmp_path: Path) -> None:
    """`--controller auto` looks on the local network and, finding none there (a loopback controller
    announces nothing), takes this user's own controller, as `farm agent` does, not "found none"."""
    with cli_controller(tmp_path) as ctl:
        done = farm(ctl.env, "status", "--controller", "auto", "--json", timeout=120)
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "projects" in json.loads(done.stdout), done.stdout
        assert f"using this user's controller on {ctl.url}" in done.stderr, done.stderr
