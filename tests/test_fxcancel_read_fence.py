"""An unexpected error while the controller reads a message off its socket drops that message and
the loop goes on: it once escaped the loop's read step and ended the controller (and the rest of
that turn's messages went unread).

Reading raises only `ProtocolError` for anything a peer can send today, so a bug in it is
injected: `unpack` raises for one crafted body. The message travels over a real socket to a
real controller, with a good one right behind it on the same connection.
"""

from __future__ import annotations

import logging

import msgpack
import zmq

import farm.controller.server as server
from farm.client import Client
from farm.protocol import PROTOCOL_VERSION, T, unpack

CRAFTED = msgpack.packb({"crafted": True})


def _buggy_unpack(frames):
    if len(frames) > 1 and bytes(frames[1]) == CRAFTED:
        raise RuntimeError("a bug in reading this message")
    return unpack(frames)


def test_a_message_that_breaks_reading_is_dropped_and_the_loop_goes_on(controller, monkeypatch, caplog):
    monkeypatch.setattr(server, "unpack", _buggy_unpack)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"crafty-peer")
    sock.connect(controller.url)
    try:
        with caplog.at_level(logging.ERROR, logger="farm.controller.server"):
            sock.send_multipart([bytes((PROTOCOL_VERSION, T.STATUS)), CRAFTED])
            sock.send_multipart([bytes((PROTOCOL_VERSION, T.STATUS)), msgpack.packb({})])
            assert sock.poll(30_000), "no answer to the STATUS sent behind the crafted message"
            reply = unpack(sock.recv_multipart())
            assert reply.type is T.STATUS_REPLY
            with Client(controller.url, timeout=30) as other:  # and the controller serves on
                assert other.status()["controller"] == controller.url
    finally:
        sock.close()
    assert controller.crash is None and controller.wait(0)  # the loop still runs
    assert controller.stats["handler_errors"] >= 1
    logged = [r for r in caplog.records if "reading a message from" in r.getMessage()]
    assert logged and "crafty-peer" in logged[0].getMessage(), [r.getMessage() for r in caplog.records]
    assert "a bug in reading this message" in (logged[0].exc_text or ""), logged[0].exc_text
