"""`farm controller --http` on a port the controller itself takes (its file service listens on the
job port + 1) failed after starting, with "cannot listen for HTTP on 127.0.0.1:5556: Address already
in use", as if another program held the port. Now it is refused before anything starts, saying
whose port it is (exit 2, as a bad option). Real `farm controller` processes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import restartable_url

FARM = [sys.executable, "-m", "farm"]


@pytest.mark.parametrize("offset, whose", [(1, "file service's port"), (0, "job port (--bind)")])
def test_an_http_port_the_controller_takes_itself_is_refused_naming_it(tmp_path, offset, whose):
    url = restartable_url()
    port = int(url.rpartition(":")[2]) + offset
    done = subprocess.run([*FARM, "controller", "--bind", url, "--state-dir", str(tmp_path / "state"),
                           "--keys-dir", str(tmp_path / "keys"), "--http", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    # before: exit 1, "cannot listen for HTTP on 127.0.0.1:PORT: Address already in use"
    assert done.returncode == 2, done.stderr
    said = " ".join(done.stderr.replace("│", " ").split())
    assert f"port {port} is this controller's own {whose}" in said, done.stderr
    assert "listening" not in done.stderr  # refused before it started


def test_a_free_http_port_is_not_refused(tmp_path):
    from farm.cli.controller import _refuse_own_port

    _refuse_own_port("tcp://127.0.0.1:5555", None, "127.0.0.1", 8642)
    _refuse_own_port("tcp://127.0.0.1:5555", None, "10.0.0.7", 5556)  # another interface: no clash
    _refuse_own_port("ipc:///run/farm.sock", None, "127.0.0.1", 5556)
    with pytest.raises(Exception, match="file service"):
        _refuse_own_port("tcp://0.0.0.0:5555", 6000, "127.0.0.1", 6000)
