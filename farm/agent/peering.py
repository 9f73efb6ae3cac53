"""This agent as a member of its farm's swarm: the block server it runs and the clients it fetches with.

The block server (`farm.filesync.peerserver.PeerServer`) listens on the address this machine uses
to reach the controller (a socket's route, not a guess), on the controller's file port + 1 (the
job port + 2) when that is free, else on a random port; see docs/security.md for the firewall.
With keys it uses this agent's own key pair, and fetchers check it is the key the controller
named. Peers run only over TCP; ``farm agent --no-peers`` turns all of this off.

A registration with the tracker lasts `TTL_S` (10 minutes); a sync makes one, and a thread here
renews it every half of that for each tree this agent still holds (one small ``peers`` request
per tree), so agents joining late in a long render still find the nodes that hold the files.
It also brings the farm's members to the block server between syncs.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

import zmq

from farm.filesync import Store, wire
from farm.filesync.client import FileClient
from farm.filesync.errors import SyncError, TransferError
from farm.filesync.holdings import Holdings
from farm.filesync.peerserver import PeerServer
from farm.filesync.swarm import SwarmClient
from farm.filesync.tracker import TTL_S
from farm.security import ClientSecurity

log = logging.getLogger(__name__)

SocketSetup = Callable[[zmq.Socket], None]
REFRESH_S = TTL_S / 2  # registrations renewed this often while a tree is held
REFRESH_TIMEOUT_S = 5.0  # a renewal not answered this long is tried again at the next round


def route_address(host: str, port: int) -> str | None:
    """The local address this machine sends from to reach ``host`` (no packet is sent), for an endpoint."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(addr)
            local = probe.getsockname()[0]
    except OSError as exc:
        log.info("no route to %s to serve peers on: %s", host, exc)
        return None
    return f"[{local}]" if family == socket.AF_INET6 else str(local)


class PeerNode:
    """Holdings and block server of one agent; makes the clients its fetches use (any thread)."""

    def __init__(self, socket_setup: SocketSetup | None, agent: str | None = None, *,
                 refresh_s: float = REFRESH_S) -> None:
        """``agent``: this agent's id, told to the tracker (which then never lists us to ourselves);
        ``refresh_s``: how often registrations are renewed (seconds)."""
        # the agent's CURVE set-up is its ClientSecurity's bound method: the same key pair serves peers
        owner = getattr(socket_setup, "__self__", None)
        self.security = owner if isinstance(owner, ClientSecurity) else None
        self.socket_setup = socket_setup
        self.agent = agent
        self.holdings = Holdings()
        self.server: PeerServer | None = None
        self._tried = False
        self._lock = threading.Lock()  # fetch threads of several projects
        self.refresh_s = refresh_s
        self._served: dict[tuple[str, str], str] = {}  # (file service, tree) -> manifest id registered
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def client(self, files_endpoint: str, store: Store) -> FileClient:
        """A client fetching from the controller's file service at ``files_endpoint`` and from peers."""
        if self.socket_setup is not None and self.security is None:  # keys not ours to reuse: no plaintext
            return FileClient(files_endpoint, store, socket_setup=self.socket_setup)
        with self._lock:
            serve = self._serve(files_endpoint)
            server = self.server
        return SwarmClient(files_endpoint, store, holdings=self.holdings, serve=serve,
                           peer_setup=self._peer_setup, socket_setup=self.socket_setup,
                           agent=self.agent, on_members=server.members.update if server is not None else None,
                           members_id=(lambda: server.members.id) if server is not None else None,
                           on_served=lambda tree, manifest: self._serving(files_endpoint, tree, manifest))

    def _serving(self, files_endpoint: str, tree: str, manifest_id: str) -> None:
        with self._lock:
            self._served[(files_endpoint, tree)] = manifest_id
            if self._refresher is None and not self._stop.is_set():
                self._refresher = threading.Thread(target=self._refresh_loop, name="farm-peer-refresh",
                                                   daemon=True)
                self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            with self._lock:
                served = list(self._served.items())
            for (files_endpoint, tree), manifest_id in served:
                if self._stop.is_set():
                    return
                if self.holdings.have(manifest_id) is None or not self._refresh(files_endpoint, tree):
                    with self._lock:  # no longer held here, or no longer published there
                        if self._served.get((files_endpoint, tree)) == manifest_id:
                            del self._served[(files_endpoint, tree)]

    def _refresh(self, files_endpoint: str, tree: str) -> bool:
        """Renew this agent's registration for ``tree``; False if the file service no longer has it."""
        server = self.server
        if server is None:
            return False
        fields = {"tree": tree, "serve": server.endpoint, "members": server.members.id, "dead": []}
        if self.agent:
            fields["agent"] = self.agent
        try:
            with FileClient(files_endpoint, None, socket_setup=self.socket_setup,
                            timeout=REFRESH_TIMEOUT_S) as client:
                body, payloads = client._call(wire.PEERS, fields)
        except TransferError as exc:
            log.debug("cannot renew serving %s: %s", tree, exc)
            return not str(exc).startswith("file server refused")  # refused: unpublished; else try again
        if payloads:
            keys = bytes(wire.view(payloads[0])).decode("ascii", "replace").split()
            server.members.update(body["members_id"], keys)
        return True

    def _peer_setup(self, key: str) -> SocketSetup | None:
        if self.security is None:
            return None
        keys = self.security.keys

        def setup(sock: zmq.Socket) -> None:
            sock.curve_secretkey = keys.secret
            sock.curve_publickey = keys.public
            sock.curve_serverkey = key.encode()  # the controller named it: anyone else fails the handshake
        return setup

    def _serve(self, files_endpoint: str) -> str | None:
        if self.server is not None:
            return self.server.endpoint
        if self._tried or not files_endpoint.startswith("tcp://"):
            return None
        self._tried = True
        host, _, port = files_endpoint[len("tcp://"):].rpartition(":")
        local = route_address(host.strip("[]"), int(port))
        if local is None:
            return None
        keys = self.security.keys if self.security is not None else None
        for bind in (f"tcp://{local}:{int(port) + 1}", f"tcp://{local}:*"):
            try:
                self.server = PeerServer(bind, self.holdings, keys=keys).start()
            except SyncError as exc:
                log.debug("cannot serve peers on %s: %s", bind, exc)
                continue
            log.info("serving cached project files to other agents on %s", self.server.endpoint)
            return self.server.endpoint
        log.warning("cannot serve project files to other agents on %s; fetching from them only", local)
        return None

    def close(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        if self.server is not None:
            self.server.close()
            self.server = None
