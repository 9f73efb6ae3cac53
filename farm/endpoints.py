"""ZeroMQ endpoint arithmetic: where the file service listens, and how a peer reaches it."""

from __future__ import annotations

import zmq

from farm.errors import FarmError

DIALLABLE = "tcp://HOST:PORT or ipc://PATH"  # what a node or client can dial: see `endpoint_problem`
IPC_PATH_MAX = 107  # bytes: a Unix socket's sun_path, less its final NUL


def endpoint_problem(url: str, *, bind: bool = False) -> str | None:
    """What is wrong with `url` as a controller's address (a sentence), or None when ZeroMQ can use it.

    Farm's processes reach a controller over ``tcp://HOST:PORT`` (PORT 1-65535) or
    ``ipc://PATH`` (a Unix socket, at most 107 bytes); ``inproc://`` lives inside one process,
    so no command can name it. With `bind`, HOST may be ``*`` and PORT ``0`` or ``*`` (a free one).
    Checked where an address enters, so a typo is named as such, not as a ZeroMQ error.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("tcp", "ipc"):  # ZeroMQ knows its schemes in lower case only
        return f"expected {DIALLABLE}"
    if scheme == "ipc":
        if not rest:
            return "expected ipc://PATH: the path is missing"
        size = len(rest.encode())
        if size > IPC_PATH_MAX:
            return f"the socket path is {size} bytes long; a Unix socket's is at most {IPC_PATH_MAX}"
        return None
    host, colon, port = rest.rpartition(":")
    if not colon or not host or any(c.isspace() or c == "/" for c in host) or (host == "*" and not bind):
        return f"expected tcp://HOST:PORT{' (HOST may be *)' if bind else ''}"
    if bind and port == "*":
        return None
    lowest = 0 if bind else 1
    if not (port.isascii() and port.isdigit()) or not lowest <= int(port) < 65536:
        return f"port {port!r} is not a TCP port ({lowest}-65535{', 0: a free one' if bind else ''})"
    return None


def files_bind(job_bind: str, port: int | None = None) -> str:
    """The file synchroniser's bind address, beside the controller's job socket.

    TCP: the same host on `port`, else the job port + 1, so a firewall can open two known
    ports; a job socket on a random port (0 or ``*``) gets a random file port too.
    ``ipc://`` and ``inproc://``: the job socket's path + ``-files``.
    """
    scheme, _, rest = job_bind.partition("://")
    if scheme == "tcp":
        host, _, job_port = rest.rpartition(":")
        if port is None:
            port = int(job_port) + 1 if job_port.isdigit() and int(job_port) > 0 else None
        if port is not None and not 0 < port < 65536:
            raise FarmError(f"file service port {port} is not a TCP port (1-65535): choose one with --files-port")
        return f"tcp://{host}:{port if port is not None else '*'}"
    return f"{job_bind}-files"  # ipc:// and inproc:// paths


def reachable(advertised: str, controller_url: str) -> str:
    """The file endpoint as a peer should dial it: the controller's host, the advertised port.

    A controller bound to 0.0.0.0 advertises an address nobody can dial; the peer already
    knows a host that reaches the controller: the one it dialled for the job socket.
    """
    scheme, _, rest = advertised.partition("://")
    if scheme != "tcp" or not controller_url.startswith("tcp://"):
        return advertised
    port = rest.rsplit(":", 1)[1]
    host = controller_url[len("tcp://"):].rsplit(":", 1)[0]
    return f"tcp://{host}:{port}"


#: the socket-monitor events that mean a peer refused our secure handshake (clients and agents watch them)
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
