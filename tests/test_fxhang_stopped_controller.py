"""A controller that is up but stopped (SIGSTOP) is no answer, waited for; never "requires keys".

The kernel takes the connection for the stopped process, so the client's handshake just times out.
That once read as a mechanism mismatch: a client without keys said the controller requires keys,
and `Client.patiently` (`farm download`) gave up at the first timed-out handshake instead of
waiting for the controller as `follow` does. Real controller processes, stopped and continued;
the client's handshake times out within its silence limit (`$FARM_CLIENT_TIMEOUT`, 1 s here).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import wait_for
from join_helpers import ENV, FARM, Proc, farm_processes

from farm.cli.security import client_security
from farm.client import Client


def _controller(farm, tmp_path: Path, keys: bool) -> tuple[Proc, str]:
    if keys:  # its keys folder records it: a client using that folder holds its key and one it admits
        proc, url, _ = farm.controller(invite=False)
        return proc, url
    proc = farm.start("insecure", "controller", "--bind", "tcp://127.0.0.1:0", "--insecure",
                      "--state-dir", str(tmp_path / "state"))
    return proc, proc.wait_line("controller listening on ").split("listening on ")[1].strip()


@pytest.mark.parametrize("keys", [False, True], ids=["plain", "keys"])
def test_a_stopped_controller_is_waited_for_as_no_answer(tmp_path, keys):
    with farm_processes(tmp_path) as farm:
        proc, url = _controller(farm, tmp_path, keys)
        security = client_security(url, tmp_path / "ctl", "client", "controller", not keys)
        assert (security is not None) == keys
        client = Client(url, timeout=1, socket_setup=security.socket_setup if security else None)
        said: list[str] = []
        ended: dict[str, object] = {}

        def ask() -> None:
            try:
                ended["status"] = client.patiently(client.status, "r", reconnect_s=600, on_wait=said.append)
            except BaseException as exc:  # noqa: BLE001 (the test reports it)
                ended["error"] = exc

        os.kill(proc.proc.pid, signal.SIGSTOP)
        asking = threading.Thread(target=ask, daemon=True)
        try:
            asking.start()
            # the moment it used to give up: a handshake the stopped controller took and never answered
            wait_for(lambda: "error" in ended or getattr(client.watcher, "unanswered", False), 60,
                     "a handshake to go unanswered")
            assert "error" not in ended, f"gave up on a stopped controller: {ended['error']}"
            assert said and "no answer from the controller at" in said[0], said
            assert "waiting up to 10 min" in said[0], said
            assert not client.watcher.lacks_keys and not client.watcher.no_detail
        finally:
            os.kill(proc.proc.pid, signal.SIGCONT)
        asking.join(60)
        client.close()
        assert "status" in ended, ended.get("error")  # it answered once continued
        assert said[-1] == "", said  # and the wait was said to be over
        assert not any("requires keys" in words or "public key" in words for words in said), said


def test_farm_download_waits_for_a_stopped_controller_saying_it_does_not_answer(tmp_path):
    with farm_processes(tmp_path) as farm:
        proc, url = _controller(farm, tmp_path, keys=False)
        log = tmp_path / "download.log"
        os.kill(proc.proc.pid, signal.SIGSTOP)
        try:
            with open(log, "wb") as out:
                download = subprocess.Popen(
                    [*FARM, "--log-level", "info", "download", "no-such-run", str(tmp_path / "out"),
                     "--controller", url, "--insecure"], stderr=out, stdout=subprocess.DEVNULL,
                    env={**ENV, "FARM_CLIENT_TIMEOUT": "1", "FARM_CLIENT_RECONNECT": "600"})
            farm.procs.append(Proc(download, log))
            farm.procs[-1].wait_line("did not answer the handshake")
            farm.procs[-1].wait_line("waiting up to 10 min")
            assert download.poll() is None, log.read_text()  # still waiting, past the handshake's timeout
        finally:
            os.kill(proc.proc.pid, signal.SIGCONT)
        assert download.wait(60) == 1  # the controller, continued, answered: no such run
        text = log.read_text()
        assert "no answer from the controller at" in text and "requires keys" not in text, text
        assert "no-such-run" in text.strip().splitlines()[-1], text
