"""Parts of an agent's loop made cheaper per turn keep their word: a socket read dry hands on every
message once, in order, at most the bound per reading (`farm.agent.drain`, real ZeroMQ sockets); a
worker's results move the average job time as one step per result would when they took alike."""

from __future__ import annotations

import zmq

from farm.agent.drain import drain
from farm.agent.pool import _averaged


def test_a_socket_is_read_dry_in_order_at_most_the_bound_at_a_time():
    zctx = zmq.Context()
    try:
        pull, push = zctx.socket(zmq.DEALER), zctx.socket(zmq.DEALER)
        pull.bind("inproc://drained")
        push.connect("inproc://drained")  # in process: a message sent is there to read
        for i in range(7):
            push.send_multipart([b"m", str(i).encode()])
        got: list[bytes] = []
        assert pull.poll(30_000)
        drain(pull, lambda frames: got.append(frames[1]), limit=3)
        assert got == [b"0", b"1", b"2"]
        drain(pull, lambda frames: got.append(frames[1]))
        assert got == [str(i).encode() for i in range(7)]
        drain(pull, got.append)  # a poll's stale word: nothing to read, nothing handed on
        assert len(got) == 7
    finally:
        zctx.destroy(linger=0)


def test_the_average_moves_as_one_step_per_result_when_they_took_alike():
    stepwise = 1.0
    for _ in range(57):
        stepwise = 0.8 * stepwise + 0.2 * 0.003
    assert abs(_averaged(1.0, [0.003] * 57) - stepwise) < 1e-12
    assert _averaged(0.5, []) == 0.5
    assert min(0.001, 0.002) < _averaged(0.001, [0.002, 0.004]) < 0.004
