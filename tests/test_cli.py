"""The `farm` command line, run as a user runs it: real processes, real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

FARM = [sys.executable, "-m", "farm"]


def farm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=timeout)


def test_version_and_plugins_listing():
    assert farm("--version").stdout.startswith("farm ")
    listing = json.loads(farm("plugins", "--json").stdout)
    by_name = {p["name"]: p for p in listing["plugins"]}
    assert "error" not in listing
    assert {"maptiles", "synthetic"} <= set(by_name)
    assert by_name["synthetic"]["version"] == "0.1.0"  # the farm distribution ships it
    assert [m["name"] for m in by_name["synthetic"]["media_types"]] == ["synthetic"]
    assert "farm_register_media_types" in by_name["synthetic"]["hooks"]


def test_submit_json_summary_and_exit_code(synthetic):
    project = synthetic(jobs=40, output_bytes=16)
    done = farm("submit", str(project), "--agents", "2", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["jobs"] == {"total": 40, "done": 40, "failed": 0, "reused": 0, "resumed": 0}
    assert summary["project"] == "synth" and summary["media_type"] == "synthetic"
    assert summary["elapsed_s"] > 0


def test_submit_with_failures_exits_non_zero_and_lists_them(synthetic):
    project = synthetic(jobs=5, fail=["job-0000001"], extra="[jobs]\nmax_attempts = 1\n")
    done = farm("submit", str(project), "--agents", "1")
    assert done.returncode == 1
    assert "4/5 jobs done, 1 failed" in done.stdout
    assert "failed job-0000001: RenderError: job-0000001 is set to fail" in done.stdout


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (None, "no farm.toml"),
        ('[project]\nmedia_type = "synthetic"\n[synthetic]\njobs = [1\n', "invalid TOML"),
        ('[project]\nmedia_type = "hologram"\n', "unknown media type 'hologram' (installed: "),
        ('[project]\nmedia_type = "synthetic"\n[synthetic]\nsleep = "long"\n',
         "farm.toml:4: [synthetic] sleep: expected a number"),
    ],
)
def test_malformed_projects_fail_with_a_clear_error(tmp_path, toml, message):
    if toml is not None:
        (tmp_path / "farm.toml").write_text(toml)
    done = farm("submit", str(tmp_path))
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_remote_controller_and_agents_over_tcp(tmp_path, synthetic, monkeypatch):
    monkeypatch.delenv("FARM_KEYS", raising=False)  # it makes keys on loopback: in a config folder of its own
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    controller = subprocess.Popen([*FARM, "controller", "--bind", "tcp://127.0.0.1:0",
                                   "--state-dir", str(tmp_path / "state")],
                                  stderr=subprocess.PIPE, text=True)
    agents = []
    try:
        url = ""
        assert controller.stderr is not None
        for line in controller.stderr:
            if "listening on" in line:
                url = line.split("listening on ")[1].strip()
                break
        assert url.startswith("tcp://127.0.0.1:")
        agents = [subprocess.Popen([*FARM, "agent", "--controller", url, "--slots", "1", "--id", f"node{i}"])
                  for i in range(2)]
        project = synthetic(jobs=50, output_bytes=8)
        done = farm("submit", "--controller", url, "--json", str(project))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["jobs"]["done"] == 50
        assert len(list((project / "output").glob("*.bin"))) == 50
    finally:
        for proc in [*agents, controller]:
            proc.terminate()
        for proc in [*agents, controller]:
            proc.wait(30)
        controller.stderr.close()


def test_submit_to_an_absent_controller_fails_cleanly(synthetic):
    project = synthetic(jobs=1)
    done = subprocess.run([*FARM, "submit", "--controller", "tcp://127.0.0.1:9", str(project)],
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "FARM_CLIENT_TIMEOUT": "2"})
    assert done.returncode == 1
    assert "no answer from the controller at tcp://127.0.0.1:9" in done.stderr


def test_world_map_sample_through_the_cli(tmp_path):
    import shutil

    project = tmp_path / "world_map"
    shutil.copytree(ROOT / "sample_projects" / "world_map", project,
                    ignore=shutil.ignore_patterns("output", ".farm"))
    done = farm("submit", str(project), "--agents", "2", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["media_type"] == "maptiles" and summary["jobs"]["failed"] == 0
    assert any(o.endswith(".mbtiles") for o in summary["outputs"])
    assert Path(project / "output" / "tiles" / "0" / "0" / "0.png").is_file()


