"""`farm submit --json`: exactly one JSON object on standard output, whatever happens."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cli_helpers import FARM, cli_controller


def submit_json(*args: str, home: Path, **env: str) -> tuple[int, dict, str]:
    """Run `farm submit --json ...` as a user with no keys; (exit code, the one object, stderr)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
    clean |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home), **env}
    done = subprocess.run(
        [*FARM, "submit", "--json", *args], capture_output=True, text=True, timeout=300, env=clean
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # one object, on one line
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(lines[0]), done.stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (None, "no farm.toml"),
        ("absent", "does not exist"),
        ('[project]\nmedia_type = "synthetic"\n[synthetic]\njobs = [1\n', "invalid TOML"),
        ('[project]\nmedia_type = "hologram"\n', "unknown media type 'hologram'"),
        (
            '[project]\nmedia_type = "synthetic"\n[synthetic]\nsleep = "long"\n',
            "[synthetic] sleep: expected a number",
        ),
        ('[project]\nmedia_type = "synthetic"\n[synthetic]\nrenders = 3\n', "renders"),
    ],
)
def test_a_project_that_does_not_load_is_one_invalid_object(
    tmp_path: Path, toml: str | None, message: str
) -> None:
    project = tmp_path / "p"
    if toml != "absent":
        project.mkdir()
    if toml not in (None, "absent"):
        (project / "farm.toml").write_text(toml)
    code, obj, stderr = submit_json(str(project), home=tmp_path)
    assert code == 1
    assert set(obj) == {"error", "state", "code"} and obj["state"] == obj["code"] == "invalid"
    assert message in obj["error"]
    assert "error" not in stderr, stderr  # the object is the whole answer: no second copy as text


def test_an_unreachable_controller_is_one_failed_object(tmp_path: Path, synthetic) -> None:
    code, obj, _ = submit_json(
        "--controller", "tcp://127.0.0.1:9", str(synthetic(jobs=1)), home=tmp_path, FARM_CLIENT_TIMEOUT="2"
    )
    assert code == 1
    assert obj["state"] == "failed" and set(obj) == {"error", "state", "code"} and obj["code"] == "unreachable"
    assert obj["error"].startswith("no answer from the controller at tcp://127.0.0.1:9: nothing listens there")


def test_a_controller_that_wants_keys_we_lack_is_one_failed_object(tmp_path: Path, synthetic) -> None:
    with cli_controller(tmp_path) as ctl:
        code, obj, _ = submit_json(
            "--controller", ctl.url, str(synthetic(jobs=1)), home=tmp_path / "stranger"
        )
    assert code == 1 and obj["state"] == "failed" and "requires keys" in obj["error"]


def test_a_failed_run_is_its_summary_and_exit_1(tmp_path: Path, synthetic) -> None:
    project = synthetic(jobs=3, fail=["job-0000001"], extra="[jobs]\nmax_attempts = 1\n")
    code, obj, _ = submit_json("--agents", "1", str(project), home=tmp_path)
    assert code == 1
    assert obj["jobs"]["failed"] == 1 and "job-0000001" in json.dumps(obj["failures"])


def test_help_names_the_output_setting() -> None:
    done = subprocess.run(
        [*FARM, "submit", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "farm.toml's output directory, else 'output'" in done.stdout
    assert "(default:  directory)" not in done.stdout


def test_more_local_agents_than_the_machine_can_run_is_refused_before_any_starts(tmp_path: Path,
                                                                                 synthetic) -> None:
    """`--agents 1000` on a laptop started 2,000 Python processes that starved each other and never
    finished; now it is refused, naming the option and the limit, and no agent is started."""
    from farm.cli.submit import max_local_agents

    project = synthetic(jobs=2)
    code, reply, _ = submit_json("--agents", str(max_local_agents() + 1), str(project), home=tmp_path)
    assert code == 2 and reply["code"] == "usage", reply  # a bad value of an option, as --agents 0
    assert f"'--agents': {max_local_agents() + 1} is more" in reply["error"]
    assert f"at most {max_local_agents()}" in reply["error"]
    assert not (project / ".farm").exists()  # refused before the farm (and its state) started
    code, reply, _ = submit_json("--agents", "2", "--controller", "tcp://127.0.0.1:9", str(project),
                                 home=tmp_path)
    assert code == 2 and "embedded farm's local agents" in reply["error"], reply  # was silently ignored


#: a media type whose render prints, as a plugin or a program it starts may (to the worker's stdout)
CHATTER = """
    from farm.hookspecs import hookimpl
    from farm.mediatype import Job, MediaType


    class Chatter(MediaType):
        name = "chatter"

        def configure(self, s):
            s.finish()
            return {}

        def split(self, project):
            yield Job("only")

        def render(self, job, ctx):
            import subprocess
            print("chatter on stdout", flush=True)
            subprocess.run(["echo", "a renderer's chatter"], check=True)


    @hookimpl
    def farm_register_media_types(register):
        register(Chatter)
"""


def test_an_embedded_runs_prints_stay_out_of_the_one_object(tmp_path: Path) -> None:
    from sched_helpers import install_plugin

    site = install_plugin(tmp_path / "site", "farm_chatter_test", CHATTER, "chatter")
    project = tmp_path / "chat"
    project.mkdir()
    (project / "farm.toml").write_text('[project]\nname = "chat"\nmedia_type = "chatter"\n[chatter]\n')
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    code, summary, stderr = submit_json("--agents", "1", str(project), home=tmp_path, PYTHONPATH=path)
    assert code == 0 and summary["state"] == "done", summary
    assert "chatter on stdout" in stderr and "a renderer's chatter" in stderr  # said, where it does no harm


@pytest.mark.parametrize("args", [("plugins",), ("keys", "list"), ("keys", "invites"),
                                  ("keys", "api-token", "list")])
def test_listing_commands_print_one_object(tmp_path, args):
    """The listings were JSON arrays: a script reading "one object, errors included" broke on them."""
    clean = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
    clean |= {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
              "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_DATA_HOME": str(tmp_path / "data")}
    subprocess.run([*FARM, "keys", "create", "controller"], capture_output=True, env=clean, timeout=60,
                   check=True)
    done = subprocess.run([*FARM, *args, "--json"], capture_output=True, text=True, timeout=120, env=clean)
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert isinstance(listing, dict), done.stdout
    (rows,) = listing.values()  # the one list, named
    assert isinstance(rows, list)


def test_a_client_with_no_controller_is_told_the_join_that_exists(tmp_path):
    """`farm status` said "join one with --join", an option only `farm submit` (and agents) take."""
    clean = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER", "FARM_JOIN")}
    clean |= {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
              "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run([*FARM, "status", "--json"], capture_output=True, text=True, timeout=120, env=clean)
    answer = json.loads(done.stdout)
    assert done.returncode == 1 and answer["code"] == "unreachable", answer
    assert "`farm submit --join URL#KEY.TOKEN`" in answer["error"], answer
    assert "`farm keys invite --client`" in answer["error"], answer
