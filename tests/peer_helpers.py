"""A real controller and a DEALER socket speaking the agent protocol as a peer: tests that hand-craft
JOBS answers (RESULTS in a chosen order and mix) to hold a grouped path equal to the one-by-one path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import zmq

from farm.client import Client
from farm.controller.server import Controller
from farm.project import load_project
from farm.protocol import T, pack, unpack


@contextlib.contextmanager
def peer_run(tmp_path: Path, media_type: str, name: str,
             slots: int) -> Iterator[tuple[Controller, zmq.Socket, str]]:
    """A fresh controller (state in ``tmp_path/state``), a peer welcomed as agent ``peer`` with
    ``slots`` slots and no prefetch offering ``media_type``, and a run of project ``name`` of that
    type submitted: yields (controller, the peer's socket, run id); both stopped after."""
    # the peer sends no heartbeats: a silence of minutes, not seconds, drops it (a loaded machine)
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=60.0).start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(ctl.url)
        sock.send_multipart(pack(T.HELLO, {"agent": "peer", "host": "elsewhere", "pid": 1, "slots": slots,
                                           "prefetch": 0, "caps": [media_type], "held": [], "version": "0"}))
        assert sock.poll(30_000) and unpack(sock.recv_multipart()).type is T.WELCOME
        folder = tmp_path / name
        folder.mkdir()
        (folder / "farm.toml").write_text(f'[project]\nname = "{name}"\nmedia_type = "{media_type}"\n'
                                          f'[{media_type}]\n')
        with Client(ctl.url) as client:
            run_id = client.submit(load_project(folder))
        yield ctl, sock, run_id
    finally:
        ctl.stop()
        sock.close(linger=0)
