"""A run whose output folder was removed ended its summary with "outputs in DIR", a folder that is
not there; now it says the folder is gone.

A real controller, a real agent process, a real `farm submit --controller URL --shared-fs`.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import wait_for
from control_helpers import EventLog, remove_while_paused

FARM = [sys.executable, "-m", "farm"]


def test_a_run_whose_output_folder_is_gone_names_no_outputs_there(tmp_path, controller, agents, synthetic):
    project = synthetic(jobs=8, sleep=0.2, output_bytes=16)
    output = project / "output"
    events = EventLog(controller)
    env = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    submit = subprocess.Popen([*FARM, "submit", "--controller", controller.url, "--shared-fs", str(project)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        agents(controller.url, 1)
        wait_for(lambda: len(events.of("job.done")) >= 2, 120, "two jobs collated")
        run_id = events.of("job.done")[0].run
        remove_while_paused(controller.url, run_id, output)  # between two collates: jobs still to come
        out, err = submit.communicate(timeout=180)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.communicate()
    assert submit.returncode == 1, (out, err)
    assert f"error: the output folder {output} was removed" in out, out
    assert f"outputs in {output}" not in out, out  # before: the last line named the folder gone
    assert out.rstrip().endswith(f"no outputs: the output folder {output} is gone"), out
