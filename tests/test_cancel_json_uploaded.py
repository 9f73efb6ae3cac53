"""`farm cancel --json` of an uploaded run: one object that says how to fetch its outputs (the
`farm download` command the text says), never the controller's own folder, a path on its disk."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import wait_for

from farm.client import Client
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]


def test_cancel_json_of_an_uploaded_run_names_the_download_command_not_the_controller_s_folder(
        controller, agents, synthetic):
    agents(controller.url, 1)
    with Client(controller.url) as client:
        project = load_project(synthetic(jobs=40, sleep=0.2, output_bytes=8, name="sent"))
        run = client.submit(project, upload=True)
        wait_for(lambda: client.project(run)["done"] >= 1, 120, "some progress")
    done = subprocess.run([*FARM, "cancel", run, "--json", "--controller", controller.url],
                          capture_output=True, text=True, timeout=120)
    (line,) = done.stdout.strip().splitlines()
    report = json.loads(line)
    assert done.returncode == 0 and report["state"] == "cancelled", (report, done.stderr)
    assert str(controller.state_dir) not in line and "output_dir" not in report, report
    # what the text says to run, to fetch the outputs the controller keeps
    assert report["download_command"] == f"farm download {run} DIR --controller {controller.url}", report
    text = subprocess.run([*FARM, "cancel", run, "--controller", controller.url], capture_output=True,
                          text=True, timeout=120)
    assert f"`{report['download_command']}` fetches them" in text.stdout, text.stdout
    assert str(controller.state_dir) not in text.stdout, text.stdout


def test_cancel_json_of_a_run_read_in_place_names_no_download_command(controller, agents, synthetic):
    """The controller read the project from the submitter's disk: its outputs are where farm.toml says."""
    agents(controller.url, 1)
    with Client(controller.url) as client:
        run = client.submit(load_project(synthetic(jobs=40, sleep=0.2, name="shared")))
        wait_for(lambda: client.project(run)["done"] >= 1, 120, "some progress")
    done = subprocess.run([*FARM, "cancel", run, "--json", "--controller", controller.url],
                          capture_output=True, text=True, timeout=120)
    (line,) = done.stdout.strip().splitlines()
    report = json.loads(line)
    assert done.returncode == 0 and report["download_command"] is None, (report, done.stderr)
