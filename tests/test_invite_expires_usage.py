"""A bad `farm keys invite --expires` is a usage error (exit 2, code `usage`) as any bad value is,
not a key problem (exit 1, code `security`). Real `farm` processes on a fresh keys folder."""

from __future__ import annotations

import json
import subprocess
import sys

FARM = [sys.executable, "-m", "farm"]


def test_a_bad_expires_is_a_usage_error(tmp_path):
    keys = str(tmp_path / "keys")
    made = subprocess.run([*FARM, "keys", "create", "controller", "--keys-dir", keys], capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    for value in ("bogus", "0s", "-1h"):
        out = subprocess.run([*FARM, "keys", "invite", "--json", "--keys-dir", keys, "--url",
                              "tcp://127.0.0.1:5555", f"--expires={value}"], capture_output=True, text=True,
                             timeout=60)
        error = json.loads(out.stdout)
        assert out.returncode == 2 and error["code"] == "usage", (value, out)
        said = f"Invalid value for '--expires': bad duration '{value}': use e.g. 30m, 1h, 7d or never"
        assert error["error"] == said, error
    fine = subprocess.run([*FARM, "keys", "invite", "--json", "--keys-dir", keys, "--url", "tcp://127.0.0.1:5555",
                           "--expires", "2h"], capture_output=True, text=True, timeout=60)
    assert fine.returncode == 0 and json.loads(fine.stdout)["join"], fine
