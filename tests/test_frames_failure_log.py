"""A failed job's error ends with Blender's last lines, never an empty section.

A worker keeps its Blender up across a run's jobs, and a job's log starts when the job is sent
to it: a Blender that dies at once in a later job (a handler's ``os._exit``, a crash before its
next line) printed nothing for that job. Its error then shows the lines that Blender printed
before (its scene load, earlier jobs), saying so. End to end through `farm controller`, `farm
agent` and `farm submit --controller`, with real Blender.
"""

from __future__ import annotations

import re
import subprocess
from collections import deque
from pathlib import Path

import pytest
from cli_helpers import FARM, cli_controller
from farm_frames.media import _render_error
from farm_frames.warm import SLOT, Rendered
from test_frames import blender, write_project  # noqa: F401
from test_frames_warm import Worker

from farm.errors import RenderError

HEADER = "--- Blender log (last lines) ---"

# Loads with a line of its own, renders frame 1, and dies without a word at frame 2.
DIES_AT_2 = """
    import os
    print("farm-test: scene built", flush=True)
    def _exit_at_2(scene, *args):
        if scene.frame_current >= 2:
            os._exit(3)
    bpy.app.handlers.render_pre.append(_exit_at_2)
"""


def log_section(text: str, key: str) -> list[str]:
    """The lines of the Blender log section of job ``key``'s failure in a run's summary."""
    end = r"(?=\n  failed |\nwarning: |\noutputs|\nno outputs|\Z)"
    found = re.search(rf"failed {key}: .*?\n{re.escape(HEADER)}\n(.*?){end}", text, re.S)
    assert found, text
    return found.group(1).splitlines()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_job_its_running_blender_dies_in_shows_that_blenders_lines_through_a_controller(
        blender, tmp_path):  # noqa: F811
    root = write_project(tmp_path / "p", frames="1-2", frames_extra="chunk = 1\n", scene_extra=DIES_AT_2,
                         tail="\n[jobs]\nmax_attempts = 1\n")
    with cli_controller(tmp_path / "ctl") as ctl:
        # one slot: frame 2 goes to the Blender that rendered frame 1
        agent = subprocess.Popen([*FARM, "agent", "--controller", ctl.url, "--slots", "1", "--media-type",
                                  "frames", "--cache-dir", str(tmp_path / "cache")], env=ctl.env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            done = subprocess.run([*FARM, "submit", "--controller", ctl.url, str(root)], capture_output=True,
                                  text=True, timeout=240, env=ctl.env)
            said = done.stdout + done.stderr
            assert done.returncode == 1, said
            assert "failed: 1/2 jobs done, 1 failed" in said, said
            section = log_section(said, "frames-000002-000002")
            logs = subprocess.run([*FARM, "logs", "--controller", ctl.url, "tiny turntable",
                                   "frames-000002-000002"],
                                  capture_output=True, text=True, timeout=60, env=ctl.env)
        finally:
            agent.terminate()
            agent.wait(60)
    assert "Blender exited with code 3 rendering frames 2" in said
    assert "/ctl/state/" not in said  # a note names the local output folder, not the controller's upload
    assert section and section[0].strip(), said  # not an empty section
    assert "farm-test: scene built" in section  # the scene load, before frame 1
    assert any(line.startswith("Saved: ") and "frame_000001.png" in line for line in section), section
    assert section[-1].endswith("it printed nothing for this job]"), section
    assert "was already running" in section[-1]
    assert logs.returncode == 0 and "farm-test: scene built" in logs.stdout, logs.stdout + logs.stderr


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_in_one_worker_the_second_jobs_error_shows_the_running_blenders_lines(blender, tmp_path):  # noqa: F811
    worker = Worker(write_project(tmp_path / "p", frames="1-2", scene_extra=DIES_AT_2), tmp_path / "slot")
    try:
        assert worker.render([[1, 1]])["frames"] == 1
        with pytest.raises(RenderError) as raised:
            worker.render([[2, 2]])
    finally:
        SLOT.stop()
    message = str(raised.value)
    assert message.startswith(f"Blender exited with code 3 rendering frames 2\n{HEADER}\nBlender "), message
    assert "farm-test: scene built" in message and "it printed nothing for this job]" in message


def test_a_blender_that_printed_nothing_at_all_is_said_so():
    done = Rendered(deque(), pid=4321, version=None, reused=False, returncode=-9)
    message = str(_render_error("Blender exited with code -9 rendering frames 1", done, Path("/nowhere")))
    assert message.endswith(f"{HEADER}\n[Blender 4321 printed nothing before it exited]"), message
