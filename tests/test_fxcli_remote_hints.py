"""A remote run's outputs live at the controller: `farm cancel` and a Ctrl-C'd `farm submit --controller`
name the commands that follow, fetch and cancel it (with its id), never the controller's own folder.
Real controller, real agent processes, real SIGINT to the submitter's process group."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import wait_for

FARM = [sys.executable, "-m", "farm"]


def test_ctrl_c_on_a_remote_submit_names_the_commands_to_follow_fetch_and_cancel_it(
        controller, agents, synthetic, tmp_path: Path) -> None:
    agents(controller.url, 1)
    project = synthetic(jobs=200, sleep=0.1, output_bytes=16, name="goes-on")
    err = tmp_path / "err"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([*FARM, "submit", "--controller", controller.url, str(project)],
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        try:
            wait_for(lambda: controller.stats["collated"] >= 3, 120, "some jobs collated")
            os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C
            proc.wait(120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    (run,) = controller.status()["projects"]
    last = err.read_text().strip().splitlines()[-1]
    at = re.escape(f"--controller {controller.url}")
    said = re.fullmatch(
        rf"interrupted: \d+ of 200 jobs done; the run goes on at the controller: `farm download "
        rf"{run['id']} DIR {at}` follows it and fetches its outputs; "
        rf"`farm cancel {run['id']} {at}` cancels it",
        last)
    assert proc.returncode == 130 and said, last
    # the command it names does what it says
    cancel = subprocess.run([*FARM, "cancel", run["id"], "--controller", controller.url], capture_output=True,
                            text=True, timeout=120, check=False)
    assert cancel.returncode == 0, cancel.stderr
    assert controller.status()["projects"][0]["state"] == "cancelled"
