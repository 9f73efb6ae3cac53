"""`farm keys invite` without --url invites to the address `farm controller` last recorded; when
nothing answers there now (that controller stopped, or another one with these keys recorded its
address and then stopped) it says so, rather than hand out a command whose agent never connects.
Real `farm` processes on a fresh keys folder; a real listening socket stands for the controller."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from farm.cli.invite import remember_url
from farm.keys import KeyStore

FARM = [sys.executable, "-m", "farm"]


def _invite(keys: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, "keys", "invite", "--keys-dir", keys, *extra], capture_output=True, text=True,
                          timeout=60)


def test_an_invite_to_an_address_nothing_answers_at_says_so(tmp_path):
    keys = str(tmp_path / "keys")
    made = subprocess.run([*FARM, "keys", "create", "controller", "--keys-dir", keys], capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    with socket.create_server(("127.0.0.1", 0)) as live:
        url = f"tcp://127.0.0.1:{live.getsockname()[1]}"
        remember_url(KeyStore(tmp_path / "keys"), url)
        answered = _invite(keys)
        assert answered.returncode == 0, answered.stderr
        assert url in answered.stdout and "warning" not in answered.stderr, answered.stderr
        assert "warning" not in json.loads(_invite(keys, "--json").stdout)
    # the listener is closed: the recorded controller has stopped
    gone = _invite(keys)
    assert gone.returncode == 0, gone.stderr
    assert url in gone.stdout  # still the recorded address (it may come back there), but said
    assert f"warning: nothing answers at {url}" in gone.stderr and "--url" in gone.stderr, gone.stderr
    said = json.loads(_invite(keys, "--json").stdout)  # one object, the warning in it
    assert url in said["join"] and said["warning"].startswith(f"nothing answers at {url}"), said
    named = _invite(keys, "--url", url)  # an address the user names is theirs to judge
    assert named.returncode == 0 and "warning" not in named.stderr, named.stderr
