"""A flood cannot take an honest client's place in the waiting room: messages past a peer's
per-turn budget wait for the next turn within that peer's own share (`farm.controller.peers`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import wait_for

from farm.client import Client
from farm.controller.peers import DEFER_PER_PEER, PER_PEER, Deferred
from farm.errors import ConnectionLost
from farm.protocol import T

# well-formed requests, each answered, as fast as one socket (or several) can send them
FLOODER = textwrap.dedent("""
    import sys, time
    import zmq
    from farm.protocol import T, pack
    url, sockets, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    context = zmq.Context.instance()
    socks = []
    for _ in range(sockets):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100000)
        sock.connect(url)
        socks.append(sock)
    status = pack(T.STATUS)
    end = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < end:
        for sock in socks:
            for _ in range(100):
                sock.send_multipart(status)
        sent += 100 * len(socks)
        if sent >= 2000 and sent - 100 * len(socks) < 2000:
            print("flooding", flush=True)
""")
BURST = PER_PEER + DEFER_PER_PEER // 2  # past one turn's budget, within the share that may wait


@pytest.mark.parametrize("sockets", [1, 4])
def test_an_honest_clients_excess_waits_its_turn_under_a_flood(controller, sockets):
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER, controller.url, str(sockets), "300"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert flooder.stdout is not None and flooder.stdout.readline().strip() == "flooding"
        budgets = controller.budgets
        before = budgets.dropped + budgets.admitted
        # The flood reaches the loop: read within budgets, or dropped past them. One socket's excess is
        # dropped; four sockets fairly queued fill a turn's 64 reads at 16 each, within budget, so
        # they may never be (and the honest client is then one more peer in that queue).
        wait_for(lambda: budgets.dropped + budgets.admitted > before + 2000, 60, "the flood to reach the loop")
        if sockets == 1:
            dropped = budgets.dropped
            wait_for(lambda: budgets.dropped > dropped + 2000, 60, "the flood's excess to be dropped")
        with Client(controller.url) as client:
            for burst in range(6):  # asked all at once: more than one turn's budget
                for _ in range(BURST):
                    client.send(T.STATUS)
                answered = 0
                try:
                    while answered < BURST:
                        answered += client.receive(timeout=15).type is T.STATUS_REPLY
                except ConnectionLost:
                    pass
                assert answered == BURST, f"burst {burst}: {answered} of {BURST} requests answered"
        assert flooder.poll() is None, "the flood ended before the honest client was done"
    finally:
        flooder.kill()
        flooder.communicate()
    assert controller.crash is None


def test_the_waiting_room_keeps_each_peers_share():
    room = Deferred(per_peer=4, limit=10)
    assert all(room.add(b"flood", n) for n in range(4))
    assert not room.add(b"flood", 4)  # its own share is full: dropped
    for peer in (b"a", b"b", b"c"):
        assert room.add(peer, peer)
    assert all(room.add(b"many", n) for n in range(3))  # the room is full now (10)
    assert room.add(b"honest", "h1")  # the one holding the most (flood, 4) gives up its newest
    assert room.add(b"honest", "h2")  # again (flood has 3 now, honest would have 2)
    assert room.add(b"a", "a2")  # "many" holds the most now (3): its newest goes
    assert not room.add(b"b", "b2")  # no one holds more than 2, as "b" would: no one to push out
    assert len(room) == 10
    waiting = room.take()
    assert waiting == [0, 1, b"a", b"b", b"c", 0, 1, "h1", "h2", "a2"]  # oldest first, the hogs' newest gone
    assert len(room) == 0 and room.add(b"flood", 9)  # a new turn: shares start again
