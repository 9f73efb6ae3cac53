"""The file service's fixed port: the job port + 1, or --files-port; printed at start-up; errors say which."""

from __future__ import annotations

import socket

import pytest
from join_helpers import farm_processes

from farm.endpoints import files_bind
from farm.errors import FarmError


def test_the_file_port_is_the_job_port_plus_one_or_the_one_given():
    assert files_bind("tcp://0.0.0.0:5555") == "tcp://0.0.0.0:5556"
    assert files_bind("tcp://[::1]:7000") == "tcp://[::1]:7001"
    assert files_bind("tcp://10.0.0.1:5555", 6000) == "tcp://10.0.0.1:6000"
    assert files_bind("tcp://127.0.0.1:0") == "tcp://127.0.0.1:*"  # a random job port: a random file port
    assert files_bind("tcp://127.0.0.1:*", 7100) == "tcp://127.0.0.1:7100"
    assert files_bind("ipc:///tmp/x/jobs") == "ipc:///tmp/x/jobs-files"
    for job, port in (("tcp://0.0.0.0:65535", None), ("tcp://0.0.0.0:5555", 70000)):
        with pytest.raises(FarmError, match="--files-port"):
            files_bind(job, port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_controller_prints_both_ports_and_says_when_the_file_port_is_taken(tmp_path):
    with farm_processes(tmp_path) as farm, socket.socket() as squatter:
        files = free_port()
        proc, url, _ = farm.controller("--files-port", str(files))
        said = proc.wait_line("file service on")
        assert f"file service on tcp://127.0.0.1:{files}" in said
        assert "firewall" not in said  # loopback: only this machine dials it

        for _ in range(50):  # a free job port whose + 1 we can take
            job = free_port()
            try:
                squatter.bind(("127.0.0.1", job + 1))
                break
            except OSError:
                continue
        squatter.listen()
        taken = job + 1
        refused = farm.run("controller", "--bind", f"tcp://127.0.0.1:{job}", "--keys-dir",
                           str(tmp_path / "ctl"), "--state-dir", str(tmp_path / "state-taken"), timeout=60)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert f"cannot bind tcp://127.0.0.1:{taken}" in refused.stderr and "--files-port" in refused.stderr
