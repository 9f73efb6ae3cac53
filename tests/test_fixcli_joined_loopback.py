"""After a join, `--controller URL` alone is enough, on loopback too; and an agent that dials a
controller requiring keys in plain text stops with a clear error (real processes)."""

from __future__ import annotations

import json
import os
import subprocess

from join_helpers import ENV, FARM, Farm, Proc, farm_processes

from farm.cli.agent import JOIN_REFUSED_EXIT

PROJECT = '[project]\nname = "j"\nmedia_type = "synthetic"\n[synthetic]\njobs = 2\n'


def _home(tmp_path, name: str) -> dict[str, str]:
    home = tmp_path / name
    home.mkdir()
    env = {k: v for k, v in ENV.items() if k not in ("XDG_CONFIG_HOME", "FARM_JOIN", "FARM_JOIN_FILE")}
    return {**env, "HOME": str(home)}


def _start(farm: Farm, name: str, env: dict[str, str], *args: str) -> Proc:
    log = farm.folder / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*FARM, "--log-level", "info", *args], stderr=out, stdout=subprocess.DEVNULL,
                                env=env)
    farm.procs.append(Proc(proc, log))
    return farm.procs[-1]


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=120, env=env)


def test_a_joined_agent_and_client_restart_with_only_the_controller_url(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, join = farm.controller()
        assert url.startswith("tcp://127.0.0.1:") and join
        env = _home(tmp_path, "h")
        agent_args = ("agent", "--id", "a2", "--slots", "1", "--parent-pid", str(os.getpid()))
        first = _start(farm, "first", {**env, "FARM_JOIN": join}, *agent_args)
        assert f"`--controller {url}` is enough" in first.wait_line("from now on")
        first.wait_line("connected to ")
        first.stop()

        again = _start(farm, "again", env, *agent_args, "--controller", url)
        again.wait_line("connected to ")
        assert "requires keys" not in again.text()

        # a client: joins once with a client token, then names only the controller
        client_join = _run({**ENV, "FARM_KEYS": str(tmp_path / "ctl")}, "keys", "invite", "--client", "--json")
        assert client_join.returncode == 0, client_join.stderr
        project = tmp_path / "p"
        project.mkdir()
        (project / "farm.toml").write_text(PROJECT)
        joined = _run({**env, "FARM_JOIN": json.loads(client_join.stdout)["join"]}, "submit", str(project),
                      "--json")
        assert joined.returncode == 0, joined.stderr
        status = _run(env, "status", "--json", "--controller", url)
        assert status.returncode == 0, status.stderr
        assert "a2" in {a["id"] for a in json.loads(status.stdout)["agents"]}
        submitted = _run(env, "submit", str(project), "--json", "--controller", url)
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads(submitted.stdout)["state"] == "done"


def test_an_agent_without_keys_for_a_keyed_controller_stops_saying_how(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, _ = farm.controller()
        env = _home(tmp_path, "stranger")  # never joined: no keys, so it dials in plain text
        stranger = _start(farm, "stranger", env, "agent", "--id", "s", "--slots", "1", "--controller", url)
        assert stranger.proc.wait(120) == JOIN_REFUSED_EXIT
        text = stranger.text()
        assert "error: the agent stops: the controller at" in text and "requires keys and we have none" in text
        assert "farm keys invite" in text
        assert text.count("reconnecting") <= 1

