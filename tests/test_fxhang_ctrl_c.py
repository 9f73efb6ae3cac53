"""`farm submit --ui` ends on Ctrl-C (or SIGTERM) whichever thread the kernel hands the signal to.

Python runs a signal's handler in the main thread only, and only when that thread runs: the
kernel may deliver a process's signal to any thread that does not block it (the controller's,
the dashboard's). After the run the main thread waited without end for Ctrl-C, so a signal taken
by another thread was never acted on and the command hung (a rare failure of
`test_submit_ui.py`'s Ctrl-C test). Here the signal goes through another thread on purpose, once
the main thread sleeps: real `farm submit --ui` processes, real agents. (During the run the main
thread waits for the controller's updates in short polls, so it notices such a signal within one.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import wait_for
from submit_ui_helpers import another_thread, ended_by, main_thread_waits, submit_ui


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_a_signal_another_thread_takes_after_the_run_ends_it_with_the_runs_status(tmp_path: Path, synthetic,
                                                                                   sig: int):
    proc = submit_ui(tmp_path, synthetic(jobs=3, fail=["job-0000001"], name="shown"), agents=1)
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:
        said.append(line)
        if "stays up" in line:
            break
    try:
        assert said and "press Ctrl-C to stop serving" in said[-1], said
        wait_for(lambda: main_thread_waits(proc.pid), 60, "the main thread to wait for Ctrl-C")
        thread = another_thread(proc.pid, sig)
    except BaseException:
        ended_by(proc)
        raise
    out, err = ended_by(proc, lambda: os.kill(thread, sig))  # killed after 90 s: the hang
    assert proc.returncode == 1, f"{proc.returncode}: {err}"  # the run's status: it failed
    assert "stopped serving the dashboard" in err and "Traceback" not in err, err
    assert "1 failed" in out

