"""Noticing at once that a peer's block server is not there (connection refused), not after a timeout.

ZeroMQ connects in the background and retries quietly, so a request to a dead peer just waits;
the socket's monitor tells us when a connection attempt failed (``EVENT_CONNECT_RETRIED``: refused,
unreachable) before a connection came up, or after the one it had went down (the peer was
killed mid-transfer), so the fetch can drop that peer in milliseconds.
"""

from __future__ import annotations

import zmq
from zmq.utils.monitor import recv_monitor_message

EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED
MAX_EVENTS = 64  # read per check: a flapping peer cannot hold the fetch loop


class PeerWatch:
    """Watches one peer socket's connection; `refused` says whether it failed to connect."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.monitor: zmq.Socket | None = sock.get_monitor_socket(EVENTS)
        self.connected = False
        self.failed = False

    def refused(self) -> bool:
        """Whether an attempt to connect failed while no connection is up (never blocks)."""
        if self.monitor is None:
            return False
        for _ in range(MAX_EVENTS):
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_CONNECTED:
                self.connected, self.failed = True, False
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.connected = False
            elif event["event"] == zmq.EVENT_CONNECT_RETRIED:
                self.failed = True
        return self.failed and not self.connected

    def close(self) -> None:
        if self.monitor is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass  # the socket is closed already
            self.monitor.close(linger=0)
            self.monitor = None
