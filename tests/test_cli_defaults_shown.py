"""`farm controller --help` names the state folder the controller would use, as this user runs it."""

from __future__ import annotations

import os
import subprocess
import sys


def _state_dir_line(**env: str) -> str:
    """`farm controller --help`'s --state-dir line, run with ``env`` over this one (XDG_DATA_HOME unset)."""
    base = {k: v for k, v in os.environ.items() if k != "XDG_DATA_HOME"}
    done = subprocess.run([sys.executable, "-m", "farm", "controller", "--help"], capture_output=True,
                          text=True, timeout=120, env={**base, "COLUMNS": "400", "TERM": "dumb", **env})
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if "--state-dir" in line]
    return line


def test_state_dir_default_is_the_folder_used(tmp_path):
    line = _state_dir_line(XDG_DATA_HOME=str(tmp_path / "data"))
    assert f"[default: ({tmp_path / 'data' / 'farm'})]" in line, line
    line = _state_dir_line(HOME=str(tmp_path))
    assert f"[default: ({tmp_path / '.local' / 'share' / 'farm'})]" in line, line
