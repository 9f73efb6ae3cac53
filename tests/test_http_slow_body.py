"""A request body sent a byte at a time does not hold the HTTP API's connections (farm.http.limits).

A controller held to 256 open files keeps at most 48 HTTP connections. Connections that send a
control action's headers and then trickle its body, more of them than that, leave another
request answered (the oldest trickler makes room, answered 408); a body that does not arrive
within the body time limit is answered 408 on its own. Real processes, real uvicorn, real sockets.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from urllib.parse import urlsplit

import requests
import uvicorn
from conftest import wait_for
from join_helpers import farm_processes
from seclimits_helpers import limited

from farm.http.limits import bounded_protocol

FILES = 256
TRICKLERS = 120  # over the cap (a quarter of 256, less the accept batches: 48)
BODY = b'{"reason": "%s"}'


def _post_head(host: str, token: str, length: int) -> bytes:
    return (f"POST /api/v1/projects/nothing/pause HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n{{").encode()


class Tricklers:
    """`count` connections that each send a POST's headers and a byte of its body, then one more
    byte of it every half second, forever; what each is answered is kept."""

    def __init__(self, port: int, head: bytes, count: int) -> None:
        self.socks = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.socks.append(sock)
            with contextlib.suppress(OSError):  # refused at once (main's behaviour): counted below
                sock.sendall(head)
        self.answers: dict[socket.socket, bytes] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(0.5):
            for sock in self.socks:
                if sock in self.answers:
                    continue
                if select.select([sock], [], [], 0)[0]:  # answered (or closed): it sends no more
                    try:
                        self.answers[sock] = sock.recv(4096)
                    except OSError as exc:
                        self.answers[sock] = str(exc).encode()
                    continue
                with contextlib.suppress(OSError):
                    sock.send(b" ")

    def timed_out(self) -> int:
        return sum(1 for answer in list(self.answers.values()) if answer.startswith(b"HTTP/1.1 408 "))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.socks:
            sock.close()


def test_connections_trickling_a_body_leave_the_controller_answering(tmp_path):
    with farm_processes(tmp_path) as farm:
        proc = farm.start("controller", "controller", "--bind", "tcp://127.0.0.1:0", "--keys-dir",
                          str(tmp_path / "keys"), "--state-dir", str(tmp_path / "state"),
                          "--http", "127.0.0.1:0", prefix=limited(FILES))
        web = proc.wait_line("HTTP API and dashboard on ").split(" on ")[1].strip()
        token = proc.wait_line("?access_token=").rsplit("?access_token=", 1)[1].strip()
        netloc = urlsplit(web).netloc
        tricklers = Tricklers(urlsplit(web).port, _post_head(netloc, token, 4096), TRICKLERS)
        try:
            # before the fix: every connection was busy with its request, so this one was closed at once
            answer = requests.get(f"{web}api/v1/projects", headers={"Authorization": f"Bearer {token}"},
                                  timeout=30)
            assert answer.status_code == 200 and "projects" in answer.json()
            wait_for(lambda: tricklers.timed_out() > 0, 60, "a trickler to be answered 408")
        finally:
            tricklers.close()
        assert proc.proc.poll() is None, proc.text()[-2000:]
        assert "Traceback" not in proc.text(), proc.text()[-3000:]


async def _echo(scope, receive, send) -> None:
    """Reads the whole body, then answers 200 with it."""
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body, more = body + message.get("body", b""), message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Served:
    """uvicorn with the bounded protocol (a body time limit of `body_s`) in a thread, on a free port."""

    def __init__(self, body_s: float) -> None:
        config = uvicorn.Config(_echo, host="127.0.0.1", port=0, log_config=None, lifespan="off",
                                loop="asyncio", http=bounded_protocol(16, body_s=body_s))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 30, "uvicorn to start")
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(60)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_a_body_that_does_not_arrive_in_time_is_answered_408():
    served = Served(body_s=1.0)
    try:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as slow:
            slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")  # half a body
            answer = _answer(slow)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower(), answer
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as whole:
            whole.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
                          b"1234567890")
            assert _answer(whole).startswith(b"HTTP/1.1 200 ")
    finally:
        served.stop()
