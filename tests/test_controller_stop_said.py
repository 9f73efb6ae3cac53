"""`farm controller` says that it stopped and why: under a service manager its log otherwise just
ended, a stop indistinguishable from a hang. Real controller process, real SIGTERM."""

from __future__ import annotations

import subprocess
import sys


def test_a_sigterm_stop_is_said_last(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "farm", "controller", "--bind", f"ipc://{tmp_path}/c.sock",
                             "--state-dir", str(tmp_path / "state"), "--no-announce"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "controller listening on" in line:
                break
        proc.terminate()
        rest = proc.stderr.read()
        assert proc.wait(60) == 0, rest
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert rest.strip().splitlines()[-1] == "controller stopped (SIGTERM)", rest
