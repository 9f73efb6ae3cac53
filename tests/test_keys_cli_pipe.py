"""A command whose reader stops reading (`farm keys invites | head -1`) ends quietly, as Unix tools do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from farm.keys import KeyStore
from farm.tokens import TokenStore


@pytest.mark.parametrize("args", [["keys", "invites"], ["keys", "invites", "--json"], ["keys", "list"],
                                  ["keys", "invite", "--json", "--url", "tcp://10.0.0.1:5555"]])
def test_a_closed_pipe_is_not_reported_as_an_error(tmp_path, args):
    store = KeyStore(tmp_path / "keys")
    store.create("controller")
    for _ in range(3):
        TokenStore(store).create(expires_s=600)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before we write: every write breaks the pipe, deterministically
    try:
        done = subprocess.run([sys.executable, "-m", "farm", *args, "--keys-dir", str(tmp_path / "keys")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == "", done.stderr
    assert done.returncode == 141  # 128 + SIGPIPE, what a shell reports for a tool the pipe ended
