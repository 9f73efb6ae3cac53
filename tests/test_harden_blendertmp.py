"""Blender's own temp folder (``blender_XXXXXX``) lives in the agent's scratch folder, so an
agent SIGKILLed mid-frame-job leaves nothing in the system temp folder once the next agent
has removed the dead one's scratch folder (`farm.agent.scratch`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import Background, wait_for
from test_frames import PID_FILE, _gone, write_project
from test_frames import blender as blender  # the fixture: Blender's path, or a skip

from farm.agent.scratch import PREFIX


def _blender_dirs(tmp: Path, live: set[Path]) -> list[Path]:
    """Blender temp folders anywhere under ``tmp`` except inside live agents' scratch folders."""
    return [p for p in tmp.rglob("blender_*") if not any(folder in p.parents for folder in live)]


def test_a_killed_agents_blender_temp_folder_goes_with_its_scratch(blender, controller, agents, tmp_path):
    systmp = tmp_path / "systmp"  # the agents' system temp folder: ours alone, so what is left is theirs
    systmp.mkdir()
    env = {"TMPDIR": str(systmp), "TMP": str(systmp), "TEMP": str(systmp)}  # Blender reads $TMP first
    pids = tmp_path / "pids"
    root = write_project(tmp_path / "p", frames="1-48", frames_extra="chunk = 48",
                         scene_extra=PID_FILE.format(path=str(pids)))
    [first] = agents(controller.url, 1, env=env)
    Background(controller.url, root)  # followed in a thread: the agent dies under it
    wait_for(lambda: pids.exists() and pids.read_text().endswith("\n"), 120, "Blender to load the scene")
    pid = int(pids.read_text().split()[0])
    [dead_scratch] = systmp.glob(f"{PREFIX}*")
    # Blender made its temp folder at start-up: in the job's scratch, not in the system temp folder
    made = wait_for(lambda: list(systmp.rglob("blender_*")), 60, "Blender's temp folder")
    assert all(dead_scratch in p.parents for p in made), made

    first.send_signal(signal.SIGKILL)  # mid-frame-job: nobody cleans up
    first.wait(30)
    wait_for(lambda: _gone(pid), 60, f"Blender {pid} to die with its agent")
    assert dead_scratch.exists()  # left behind, Blender's temp folder in it

    agents(controller.url, 1, env=env)  # the next agent on this machine removes the dead one's folder
    wait_for(lambda: not dead_scratch.exists(), 120, "the dead agent's scratch folder removed")
    live = set(systmp.glob(f"{PREFIX}*"))
    assert _blender_dirs(systmp, live) == [], os.listdir(systmp)
