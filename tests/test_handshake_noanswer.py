"""A controller address that does not answer is told apart from one where nothing listens (real sockets)."""

from __future__ import annotations

import socket

from conftest import wait_for
from join_helpers import farm_processes

from farm.handshake import probe
from farm.keys import KeyStore


def _keys(tmp_path):
    keys = KeyStore(tmp_path / "keys")
    keys.create("client")
    keys.add_public("controller", KeyStore(tmp_path / "other").create("controller").public.decode())
    return keys.root


def test_a_port_that_drops_connections_is_no_answer_not_connection_refused(tmp_path):
    # A listener whose accept queue is full drops new SYNs, as a firewall's drop rule does.
    with socket.socket() as full, farm_processes(tmp_path) as farm:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        url = f"tcp://127.0.0.1:{full.getsockname()[1]}"
        wait_for(lambda: probe(url, 0.5) != "open", 30, "the accept queue to fill")
        done = farm.run("status", "--controller", url, "--keys-dir", str(_keys(tmp_path)), timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "no answer from 127.0.0.1:" in done.stderr and "firewall" in done.stderr, done.stderr
        assert "connection refused" not in done.stderr


def test_a_closed_port_is_still_connection_refused(tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))  # bound, not listening: the kernel answers RST
        url = f"tcp://127.0.0.1:{free.getsockname()[1]}"
        assert probe(url) == "refused"
        with farm_processes(tmp_path) as farm:
            done = farm.run("status", "--controller", url, "--keys-dir", str(_keys(tmp_path)), timeout=120)
        assert "nothing listens there (connection refused)" in done.stderr, done.stderr


def test_probe_names_what_it_saw():
    assert probe("tcp://no-such-host.invalid:5555").lower() not in ("open", "refused")
    assert probe("tcp://127.0.0.1:notaport") not in ("open", "refused")
